"""The pretraining entry point as a user runs it: summary, artefacts, errors, NaN stop, exact resume."""

from __future__ import annotations

import csv
import json
import signal

import pytest
import timm
import torch

from selfsup.run import find_resume_checkpoint
from selfsup.training.checkpoint import read_checkpoint
from selfsup.training.export import load_encoder
from tests.helpers import EVERY_STEP_CHECKPOINTS, kill_train_at_step, run_command, run_train, summary_of

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


@pytest.mark.parametrize("sig", [signal.SIGKILL])
def test_killed_mid_epoch_and_resumed_ends_bit_identical(tmp_path, sig):
    common = [
        "experiment=ijepa", *EVERY_STEP_CHECKPOINTS, "trainer.max_epochs=2", "trainer.limit_train_batches=6",
        "backbone.depth=2", "predictor.depth=1", "data.batch_size=16",
    ]
    run_train([*common, "run_name=straight"], tmp_path)
    straight = _final_state(tmp_path / "ijepa" / "straight")

    ckpt_dir = tmp_path / "ijepa" / "killed" / "checkpoints"
    kill_train_at_step([*common, "run_name=killed"], tmp_path, ckpt_dir, 4, sig)
    interrupted = read_checkpoint(find_resume_checkpoint(ckpt_dir.parent))["global_step"]
    assert 4 <= interrupted < 12, interrupted  # killed in the first epoch (6 steps/epoch), not at its end

    run_train([*common, "run_name=killed", "resume=auto"], tmp_path)
    resumed = _final_state(tmp_path / "ijepa" / "killed")
    assert resumed["global_step"] == straight["global_step"] == 12
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for a, b in zip(straight["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_readme_overrides_run(tmp_path):
    line = summary_of(run_command("python tools/train.py experiment=ijepa trainer.max_epochs=2 data.batch_size=32", tmp_path, ["debug=fast"]).stdout)
    assert line.startswith("done in") and "2 epochs, 6 steps" in line
    cfg = read_checkpoint(next((tmp_path / "ijepa").glob("*/checkpoints/last.ckpt")))["config"]
    assert cfg["data"]["batch_size"] == 32
    run_command("python tools/train.py experiment=ijepa mask.mode=official", tmp_path, ["debug=fast", "run_name=official"])
    assert read_checkpoint(tmp_path / "ijepa" / "official" / "checkpoints" / "last.ckpt")["config"]["mask"]["mode"] == "official"


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
    with open(tmp_path / "ijepa" / "myrun" / "csv" / "metrics.csv", newline="") as fh:
        steps = [int(row["step"]) for row in csv.DictReader(fh)]
    assert steps == list(range(6))  # one CSV history across both attempts
