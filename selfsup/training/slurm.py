"""SLURM facts a run needs: the job id, the restart count, requeueing, and a task layout check.

Lightning's ``SLURMEnvironment`` does the rank/world bookkeeping; ``cluster_environment`` hands it to
the trainer with ``auto_requeue=False`` so that Lightning installs no ``SIGUSR1`` handler of its own:
the ``Preemption`` callback is the one owner of the requeue signal (see its docstring).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess

from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    LightningEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

log = logging.getLogger("selfsup")


def slurm_job_id() -> str | None:
    """``<array job>_<task>`` for an array task, ``SLURM_JOB_ID`` otherwise, None outside SLURM."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID")


def slurm_restart_count() -> int:
    """How many times SLURM has requeued this job (0 on the first attempt and outside SLURM)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)


def requeue_job(job_id: str) -> bool:
    """``scontrol requeue <job_id>``; logs and returns False when it cannot (no scontrol, refused)."""
    if not re.fullmatch(r"[0-9_]+", job_id):
        log.error("not requeueing: %r is not a SLURM job id", job_id)
        return False
    try:
        proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=120)
    except (FileNotFoundError, subprocess.TimeoutExpired) as err:
        log.error("could not requeue SLURM job %s (%s): resubmit it; it resumes from its checkpoint", job_id, err)
        return False
    if proc.returncode != 0:
        log.error(
            "scontrol requeue %s failed (%d): %s -- resubmit the job; it resumes from its checkpoint",
            job_id, proc.returncode, (proc.stderr or proc.stdout).strip(),
        )
        return False
    log.warning("requeued SLURM job %s", job_id)
    return True


def cluster_environment(slurm_auto_requeue: bool) -> ClusterEnvironment:
    """The environment Lightning would detect (TorchElastic, SLURM, LSF, MPI, else local), with
    ``SLURMEnvironment(auto_requeue=slurm_auto_requeue)`` under SLURM.

    Config keys (``configs/trainer/default.yaml`` plugins): ``slurm_auto_requeue`` (false: the
    ``Preemption`` callback owns the requeue signal; true gives Lightning's handler, which saves
    inside the signal handler, mid-step).
    """
    if TorchElasticEnvironment.detect():
        return TorchElasticEnvironment()
    if SLURMEnvironment.detect():
        return SLURMEnvironment(auto_requeue=slurm_auto_requeue)
    for env in (LSFEnvironment, MPIEnvironment):
        if env.detect():
            return env()
    return LightningEnvironment()


def check_task_layout(num_nodes: int, devices: object) -> None:
    """Inside ``srun``, the tasks SLURM started must be the processes the trainer expects.

    Lightning checks ``devices == --ntasks-per-node`` only for multi-device strategies; with
    ``devices=1, num_nodes=1`` under ``srun -N2`` it would silently run two independent trainings.
    """
    if not SLURMEnvironment.detect() or "SLURM_STEP_ID" not in os.environ:
        return
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if not isinstance(devices, int):
        return  # "auto" or a device list: Lightning validates those itself
    expected = num_nodes * devices
    if tasks != expected:
        raise ValueError(
            f"SLURM started {tasks} tasks but trainer.num_nodes x trainer.devices = {num_nodes} x {devices} = "
            f"{expected} processes; use --nodes=<trainer.num_nodes> --ntasks-per-node=<trainer.devices> "
            "(tools/train.sbatch derives the trainer settings from them)"
        )
