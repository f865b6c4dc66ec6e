"""The pretraining entry point as a user runs it: summary, artefacts, errors, NaN stop, exact resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import timm
import torch

from selfsup.run import find_resume_checkpoint
from selfsup.training.checkpoint import read_checkpoint
from selfsup.training.export import load_encoder
from tests.helpers import ROOT, TRAIN, cli_env, run_command, run_train, summary_of

FAST = ["experiment=ijepa", "debug=fast"]


def test_fast_run_writes_checkpoint_backbones_logs_and_summary(tmp_path):
    proc = run_command("python tools/train.py experiment=ijepa debug=fast", tmp_path, ["run_name=smoke"])
    line = summary_of(proc.stdout)
    run_dir = tmp_path / "ijepa" / "smoke"
    assert f"checkpoint: {run_dir}/checkpoints/last.ckpt" in line
    assert "train/loss=" in line and "csv logs:" in line and f"config: {run_dir}/config.yaml" in line
    assert (run_dir / "config.yaml").exists() and (run_dir / "csv" / "metrics.csv").exists()

    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3 and ckpt["config"]["task_name"] == "ijepa"
    assert ckpt["ImageDataModule"] == {"epoch": 0, "next_batch": 3}  # the data position, for mid-epoch resume

    # the backbone-only file is a timm state dict: timm builds the same model and gives the same features
    state, meta = load_encoder(run_dir / "checkpoints" / "last.target_encoder.safetensors")
    assert meta["encoder"] == "target_encoder"
    model = timm.models.vision_transformer.VisionTransformer(**json.loads(meta["timm_kwargs"]))
    model.load_state_dict(state, strict=True)
    ours = {k.removeprefix("objective.target_encoder."): v for k, v in ckpt["state_dict"].items() if k.startswith("objective.target_encoder.")}
    assert set(ours) == set(state) and all(torch.equal(ours[k], state[k]) for k in state)


def test_unknown_override_exits_with_the_valid_keys(tmp_path):
    proc = run_train([*FAST, "backbone.dept=3"], tmp_path, check=False)
    assert proc.returncode == 2
    assert "unknown config key 'backbone.dept'" in proc.stderr and "did you mean 'depth'" in proc.stderr


def test_missing_dataset_root_is_actionable(tmp_path):
    proc = run_train([*FAST, "data=imagefolder", f"data.root={tmp_path}/nowhere"], tmp_path, check=False)
    assert proc.returncode != 0
    assert "does not exist" in proc.stderr + proc.stdout and "data=embedded" in proc.stderr + proc.stdout


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    proc = run_train(
        [*FAST, "run_name=nan", "schedule.start_lr=1e30", "schedule.ref_lr=1e30", "schedule.warmup_epochs=0",
         "trainer.limit_train_batches=4", "callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.model_checkpoint.every_n_epochs=null"],
        tmp_path, check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "the loss became" in out and "Last good checkpoint" in out
    ckpt = read_checkpoint(tmp_path / "ijepa" / "nan" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] >= 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def _final_state(run_dir):
    return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")


# one intra-op thread: a shared 2-core machine runs these ~10x faster than with OpenMP threads competing
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
KILL_COMMON = [
    "experiment=ijepa", "data.num_workers=0", "data.persistent_workers=false", "trainer.max_epochs=2",
    "trainer.limit_val_batches=0", "callbacks.model_checkpoint.export_backbones=false", "trainer.limit_train_batches=6",
    "backbone.depth=2", "predictor.depth=1", "data.batch_size=16",
]
# SIGKILL: a checkpoint every step (all kept), so the newest ones can be truncated; SIGTERM: only the
# checkpoint the signal writes (step checkpoints every 4 steps just to see progress)
KILL_CHECKPOINTS = {
    signal.SIGKILL: ["callbacks.model_checkpoint.every_n_train_steps=1", "callbacks.model_checkpoint.every_n_epochs=null",
                     "callbacks.model_checkpoint.save_top_k=-1"],
    signal.SIGTERM: ["callbacks.step_checkpoint.every_n_train_steps=4"],
}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    run_train([*KILL_COMMON, "run_name=straight"], out, **ONE_THREAD)
    return _final_state(out / "ijepa" / "straight")


# SIGKILL stays in the default suite; SIGTERM (the same resume, through the preemption callback) is slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)], ids=["SIGKILL", "SIGTERM"])
def test_killed_mid_epoch_and_resumed_ends_bit_identical(tmp_path, sig, straight_run):
    common = [*KILL_COMMON, *KILL_CHECKPOINTS[sig]]
    cmd = [sys.executable, str(TRAIN), *common, "run_name=killed", f"paths.output_dir={tmp_path}"]
    log = (tmp_path / "killed.out").open("w")  # a file, not a pipe: a full pipe would stall the run
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cli_env(**ONE_THREAD), stdout=log, stderr=subprocess.STDOUT)
    ckpt_dir = tmp_path / "ijepa" / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpt_dir.glob("*step0000004.ckpt")):
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    proc.wait()
    log.close()
    output = (tmp_path / "killed.out").read_text()  # the run's log lines go to stdout
    interrupted = read_checkpoint(find_resume_checkpoint(ckpt_dir.parent))["global_step"]
    assert 4 <= interrupted < 12, interrupted  # interrupted in the first epochs, before the end

    if sig == signal.SIGTERM:  # saved at the next step boundary, exited with 128 + 15
        assert proc.returncode == 143, output[-3000:]
        saved = read_checkpoint(ckpt_dir / "preempted.ckpt")["global_step"]
        assert saved == interrupted and f"SIGTERM: saved {ckpt_dir}/preempted.ckpt at step {saved}" in output
        expected_resume = ckpt_dir / "preempted.ckpt" if saved % 4 else None  # else: the step-4k checkpoint is as new
    else:  # the newest checkpoints are truncated (a crash mid-copy, a full disk): the previous good one is used
        newest = sorted(ckpt_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)[-2:]
        for path in newest:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        expected_resume = find_resume_checkpoint(ckpt_dir.parent)
        assert expected_resume not in newest and read_checkpoint(expected_resume)["global_step"] == interrupted - 1

    proc = run_train([*common, "run_name=killed", "resume=auto"], tmp_path, **ONE_THREAD)
    out = proc.stdout + proc.stderr
    if expected_resume is not None:
        assert f"resume=auto: resuming from {expected_resume}" in out
    if sig == signal.SIGKILL:
        assert f"skipping unusable checkpoint: checkpoint {newest[-1]} is corrupt, truncated" in out
    resumed = _final_state(tmp_path / "ijepa" / "killed")
    assert resumed["global_step"] == straight_run["global_step"] == 12
    for key, value in straight_run["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for a, b in zip(straight_run["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_readme_overrides_run(tmp_path):
    line = summary_of(run_command("python tools/train.py experiment=ijepa trainer.max_epochs=2 data.batch_size=32", tmp_path, ["debug=fast"]).stdout)
    assert line.startswith("done in") and "2 epochs, 6 steps" in line
    cfg = read_checkpoint(next((tmp_path / "ijepa").glob("*/checkpoints/last.ckpt")))["config"]
    assert cfg["data"]["batch_size"] == 32
    run_command("python tools/train.py experiment=ijepa mask.mode=official", tmp_path, ["debug=fast", "run_name=official"])
    assert read_checkpoint(tmp_path / "ijepa" / "official" / "checkpoints" / "last.ckpt")["config"]["mask"]["mode"] == "official"
    assert summary_of(run_command("python tools/train.py experiment=ijepa", tmp_path, ["debug=fast", "run_name=quickstart"]).stdout)


def test_wandb_logger_works_offline_without_a_key(tmp_path):
    proc = run_command("python tools/train.py experiment=ijepa logger=wandb", tmp_path, ["debug=fast", "run_name=wb"], WANDB_MODE="")
    run_dir = tmp_path / "ijepa" / "wb"
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    offline = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert offline and (offline[0] / f"run-{run_id}.wandb").stat().st_size > 0
    assert "wandb sync" in proc.stderr + proc.stdout


def test_named_run_resumes_with_resume_auto(tmp_path):
    run_command("python tools/train.py experiment=ijepa run_name=myrun", tmp_path, ["debug=fast"])
    proc = run_command("python tools/train.py experiment=ijepa run_name=myrun resume=auto", tmp_path, ["debug=fast", "trainer.max_epochs=2"])
    assert "resume=auto: resuming from" in proc.stderr + proc.stdout
    ckpt = read_checkpoint(tmp_path / "ijepa" / "myrun" / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 6 and ckpt["epoch"] == 1
    rows = list(csv.DictReader((tmp_path / "ijepa" / "myrun" / "csv" / "metrics.csv").read_text().splitlines()))
    steps = [int(r["step"]) for r in rows if r["train/loss"]]  # (the validation rows hold the online-probe accuracy)
    assert steps == list(range(6))  # one CSV history across both attempts
    assert [int(r["step"]) for r in rows if r["val/online_ep_acc1"]] == [2, 5]
