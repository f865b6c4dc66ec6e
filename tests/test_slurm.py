"""A real SLURM cluster (two nodes, in a private loopback-only network namespace) runs 2-node DDP
pretraining through ``tools/train.sbatch``; a preemption (``scancel --signal=USR1``) requeues the job,
which continues exactly: same final weights as the uninterrupted job, one run directory, one wandb
run holding the history of both attempts; the same job and preemption through the Hydra submitit
launcher end with the same weights.
"""

from __future__ import annotations

import shlex
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from selfsup.training.checkpoint import read_checkpoint
from tests.helpers import ROOT, cli_env, run_command
from tests.slurm_cluster import LocalSlurmCluster
from tests.wandb_file import read_run

pytestmark = pytest.mark.slow

STEPS = 20  # 2 epochs x 10 steps, 2 processes x 8 images per step
TRAIN = [
    "data.num_workers=0", "data.persistent_workers=false", "trainer.max_epochs=2", "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=0", "backbone.depth=2", "predictor.depth=1", "data.batch_size=8",
    "callbacks.model_checkpoint.export_backbones=false", "callbacks.step_checkpoint.every_n_train_steps=2",
    "logger=many", "trainer.log_every_n_steps=1",
]
SBATCH = "sbatch --nodes=2 --ntasks-per-node=1 tools/train.sbatch experiment=ijepa trainer=ddp trainer.accelerator=cpu"
SUBMITIT = "python tools/train.py -m hydra/launcher=submitit_slurm experiment=ijepa trainer=ddp trainer.accelerator=cpu trainer.num_nodes=2 trainer.devices=1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = LocalSlurmCluster.unavailable()
    if reason:
        pytest.skip(f"no local SLURM cluster on this machine: {reason}")
    c = LocalSlurmCluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    yield c
    c.stop()


def job_env(cluster: LocalSlurmCluster) -> dict[str, str]:
    """What the jobs inherit (sbatch exports the submitter's environment). The two virtual nodes share
    the machine's 2 cores: one intra-op thread per rank (Lightning would pick one per core per node)."""
    return cli_env(
        SLURM_CONF=str(cluster.conf), PYTHON=sys.executable, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1",
        PATH=cluster.env()["PATH"],
    )


def submit(cluster: LocalSlurmCluster, out_dir: Path, log: Path, wait: bool) -> str:
    """The README's sbatch command, with the test's outputs and the small training settings."""
    args = shlex.split(SBATCH)
    cmd = [args[0], "--parsable", f"--output={log}", *(["--wait"] if wait else []), *args[1:], *TRAIN, f"paths.output_dir={out_dir}"]
    proc = cluster.run(cmd, cwd=ROOT, env=job_env(cluster), timeout=900)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{log.read_text() if log.exists() else ''}\n{cluster.logs()}"
    return proc.stdout.strip().split(";")[0]


def final_state(run_dir: Path) -> dict:
    return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == STEPS
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def csv_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("step")
    return sorted({int(line.split(",")[column]) for line in lines[1:]})


@pytest.fixture(scope="module")
def plain_job(cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("sbatch")
    log = out / "job.out"
    job = submit(cluster, out, log, wait=True)
    return job, out / "ijepa" / f"slurm-{job}", log


def test_sbatch_runs_two_node_ddp(cluster, plain_job):
    job, run_dir, log = plain_job
    text = log.read_text()
    info = cluster.job_state(job)
    assert info["JobState"] == "COMPLETED" and info["NodeList"] == "n[1-2]", info
    assert "done in" in text and f"{STEPS} steps" in text, text[-3000:]
    assert "rank consistency: all 2 processes hold bit-identical copies" in text
    ckpt = final_state(run_dir)
    assert ckpt["global_step"] == STEPS and ckpt["global_batch_size"] == 16
    assert ckpt["config"]["trainer"]["num_nodes"] == 2 and ckpt["config"]["trainer"]["devices"] == 1
    assert sorted(p.name for p in (run_dir.parent).iterdir()) == [run_dir.name]  # one directory, not one per rank


def resumed_from_the_preemption(log: str, run_dir: Path, saved: int) -> bool:
    """The requeued attempt resumed from the state saved at the preemption: ``preempted.ckpt``, or the
    step checkpoint written at that same step (on a fast machine the signal can land on a step where
    the periodic step checkpoint is also saved, just after ``preempted.ckpt``: the same state)."""
    return any(f"resume=auto: resuming from {run_dir}/checkpoints/{name}" in log
               for name in ("preempted.ckpt", f"step{saved:07d}.ckpt"))


def wait_for_a_step_checkpoint(root: Path, pattern: str, alive: Callable[[], bool], why: Callable[[], object], first: int = 4) -> None:
    """Until ``root.glob(pattern)`` finds a step checkpoint of step >= ``first``. Only the newest step
    checkpoint is kept, so ``step0000004.ckpt`` lives for two steps (~0.2 s on a quiet machine):
    waiting for that one file missed it, and the job had ended when the test looked again."""
    deadline = time.time() + 600
    while not any(int(p.stem.removeprefix("step")) >= first for p in root.glob(pattern)):
        assert time.time() < deadline and alive(), why()
        time.sleep(0.1)


def test_preempted_job_requeues_and_continues_exactly(cluster, plain_job, tmp_path):
    job = submit(cluster, tmp_path, tmp_path / "job.out", wait=False)
    run_dir = tmp_path / "ijepa" / f"slurm-{job}"
    wait_for_a_step_checkpoint(run_dir, "checkpoints/step*.ckpt", lambda: cluster.job_state(job)["JobState"] in ("PENDING", "RUNNING"),
                               lambda: (tmp_path / "job.out").read_text())
    cluster.run(["scancel", "--signal=USR1", job], check=True)
    cluster.wait_for(job, {"PENDING", "REQUEUED", "REQUEUE_HOLD"}, timeout=300)
    cluster.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)  # skip the 2 min requeue hold
    info = cluster.wait_for(job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}, timeout=600)
    text = (tmp_path / "job.out").read_text()  # --open-mode=append: both attempts
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", f"{info}\n{text[-4000:]}"

    saved = int(text.split("SIGUSR1: saved ")[1].split(" at step ")[1].split()[0])
    assert 4 <= saved < STEPS, saved
    assert f"requeued SLURM job {job}" in text and "attempt 1" in text
    assert resumed_from_the_preemption(text, run_dir, saved), text[-4000:]
    assert_same_weights(final_state(plain_job[1]), final_state(run_dir))  # exactly where it stopped

    # one run directory across attempts, one CSV history, one wandb run holding both attempts
    assert sorted(p.name for p in run_dir.parent.iterdir()) == [run_dir.name]
    assert csv_steps(run_dir) == list(range(STEPS))
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    parts = [read_run(f) for f in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]
    assert len(parts) == 2 and {p.run_id for p in parts} == {run_id}
    first, second = ([h["trainer/global_step"] for h in p.history if "train/loss" in h] for p in parts)
    assert parts[0].preempting and parts[0].exit_code == 128 + 10 and parts[1].exit_code == 0
    assert first == list(range(saved)) and second == list(range(saved, STEPS))


def test_submitit_launcher_job_is_preempted_and_continues_exactly(cluster, plain_job, tmp_path):
    """The README's launcher command, without run_name: both ranks and both attempts must land in the
    one timestamped sweep directory. Preempted with USR1 mid-run, it ends with the plain job's weights."""
    env = {k: v for k, v in job_env(cluster).items() if k in ("SLURM_CONF", "PYTHON", "MASTER_ADDR", "OMP_NUM_THREADS", "PATH")}
    result: dict = {}

    def launch() -> None:  # the launcher blocks until the job (all its attempts) is done
        try:
            result["proc"] = run_command(
                SUBMITIT, tmp_path, [*TRAIN, "hydra.launcher.timeout_min=15"], timeout=1200, prefix=[str(cluster.nsrun)], **env,
            )
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            result["error"] = err

    launcher = threading.Thread(target=launch)
    launcher.start()
    wait_for_a_step_checkpoint(tmp_path, "ijepa/multirun/*/0/checkpoints/step*.ckpt", launcher.is_alive, lambda: result)
    job = cluster.run(["squeue", "-h", "-o", "%i"]).stdout.split()[0]  # the only job: <array job>_0
    cluster.run(["scancel", "--signal=USR1", job], check=True)
    cluster.wait_for(job, {"PENDING", "REQUEUED", "REQUEUE_HOLD"}, timeout=300)
    cluster.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    launcher.join(timeout=1200)
    assert not launcher.is_alive() and "error" not in result, result
    assert "Submitit 'slurm' sweep output dir" in result["proc"].stdout + result["proc"].stderr

    sweeps = list((tmp_path / "ijepa" / "multirun").iterdir())
    assert len(sweeps) == 1, sweeps  # one directory for both ranks and both attempts
    run_dir = sweeps[0] / "0"
    header = next(sweeps[0].glob(".submitit/*/*_submission.sh")).read_text()
    for line in ("--nodes=2", "--ntasks-per-node=1", "--signal=USR1@120", "--open-mode=append", "--requeue"):
        assert f"#SBATCH {line}" in header, header
    log = "\n".join(f.read_text() for f in sorted(sweeps[0].glob(".submitit/*/*_log.*")))
    saved = int(log.split("SIGUSR1: saved ")[1].split(" at step ")[1].split()[0])
    assert f"requeued SLURM job {job}" in log and resumed_from_the_preemption(log, run_dir, saved), log[-4000:]
    assert cluster.job_state(job)["Restarts"] == "1"
    assert_same_weights(final_state(plain_job[1]), final_state(run_dir))
    assert csv_steps(run_dir) == list(range(STEPS))
