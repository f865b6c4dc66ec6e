"""Scaling logic that needs no extra processes: accumulation as virtual ranks, the global-batch
learning rate, SLURM task layout and resume rules, the launcher config, checkpoint fallback, the
rank digest, and the preemption callback's settings."""

from __future__ import annotations

import math
import os
import warnings

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from omegaconf import OmegaConf

from selfsup.callbacks.preemption import Preemption
from selfsup.callbacks.rank_consistency import bit_digest
from selfsup.config import CONFIG_DIR, ConfigError, register_resolvers, slurm_gpus_per_node
from selfsup.data.collate import BatchCollator, micro_batches
from selfsup.data.sampling import ResumableBatchSampler
from selfsup.run import find_resume_checkpoint, resolve_resume
from selfsup.training.checkpoint import CheckpointError
from selfsup.training.schedules import JEPASchedule, lr_scale_factor
from selfsup.training.slurm import check_task_layout, cluster_environment, slurm_job_id
from tests.test_data import _datamodule, _folder


# ------------------------------------------------------------------ accumulation = virtual ranks
def test_one_process_accumulating_k_sees_the_batches_of_k_processes():
    ranks = [list(ResumableBatchSampler(50, 4, seed=3, rank=r, world_size=2)) for r in range(2)]
    single = ResumableBatchSampler(50, 4, seed=3, rank=0, world_size=1, accumulate=2)
    assert len(single) == len(ranks[0]) == 6
    for step, keys in enumerate(single):
        assert keys == ranks[0][step] + ranks[1][step]
        assert [k.rank for k in keys] == [0] * 4 + [1] * 4
    # 2 processes x 2 micro-batches = 4 virtual ranks; process 1 owns virtual ranks 2 and 3
    four = [list(ResumableBatchSampler(50, 4, seed=3, rank=v, world_size=4)) for v in range(4)]
    acc = list(ResumableBatchSampler(50, 4, seed=3, rank=1, world_size=2, accumulate=2))
    assert acc == [a + b for a, b in zip(four[2], four[3])]


def test_micro_batches_carry_the_masks_their_process_would_draw(tmp_path):
    dm = _datamodule(_folder(tmp_path, per_class=8))
    dm.setup()
    collate = BatchCollator(dm.mask_sampler, seed=0)
    per_rank = [next(iter(ResumableBatchSampler(len(dm.train_set), 4, rank=r, world_size=2))) for r in range(2)]
    merged = next(iter(ResumableBatchSampler(len(dm.train_set), 4, world_size=1, accumulate=2)))
    batch = collate([dm.train_set[k] for k in merged])
    parts = micro_batches(batch)
    assert len(parts) == 2 and batch["batch_index"] == 0
    for part, keys in zip(parts, per_rank):
        alone = collate([dm.train_set[k] for k in keys])
        assert part["rank"] == keys[0].rank and torch.equal(part["images"], alone["images"])
        for a, b in zip(part["masks_enc"] + part["masks_pred"], alone["masks_enc"] + alone["masks_pred"]):
            assert torch.equal(a, b)
    single = collate([dm.train_set[k] for k in per_rank[0]])
    assert micro_batches(single) == [single] and "micro_batches" not in single


def test_accumulating_datamodule_yields_one_batch_per_step(tmp_path):
    dm = _datamodule(_folder(tmp_path, per_class=8), accumulate_grad_batches=2, batch_size=2)
    dm.setup()
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 4 and all(len(micro_batches(b)) == 2 for b in batches)


# ------------------------------------------------------------------ learning rate vs global batch
def test_lr_scaling_rules():
    assert lr_scale_factor("linear", 4096, 2048) == 2.0
    assert math.isclose(lr_scale_factor("sqrt", 512, 2048), 0.5)
    assert lr_scale_factor("none", 512, 2048) == lr_scale_factor("linear", 512, None) == 1.0
    with pytest.raises(ValueError, match="schedule.lr_scaling='cubic'; valid: none, linear, sqrt"):
        lr_scale_factor("cubic", 1, 1)


def test_schedule_scales_the_whole_lr_curve_but_not_wd_or_ema():
    kwargs = dict(epochs=10, warmup_epochs=1, start_lr=2e-4, ref_lr=1e-3, final_lr=1e-6, weight_decay=0.04,
                  final_weight_decay=0.4, ema=[0.996, 1.0], steps_per_epoch=100, reference_batch_size=2048)
    ref = JEPASchedule(**kwargs)
    half = JEPASchedule(**kwargs, global_batch_size=1024)
    for step in (1, 50, 100, 500, 1000):
        assert math.isclose(half.lr(step), 0.5 * ref.lr(step)) and half.recipe_lr(step) == ref.lr(step)
        assert half.wd(step) == ref.wd(step) and half.momentum(step) == ref.momentum(step)
    assert JEPASchedule(**kwargs, global_batch_size=2048).lr_factor == 1.0


# ------------------------------------------------------------------ SLURM
def test_slurm_requeue_resumes_and_layout_is_checked(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    assert resolve_resume(None, tmp_path) is None and slurm_job_id() is None
    assert isinstance(cluster_environment(slurm_auto_requeue=False), LightningEnvironment)

    monkeypatch.setenv("SLURM_NTASKS", "2")  # srun -N2 --ntasks-per-node=1
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "1")
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "selfsup")
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    env = cluster_environment(slurm_auto_requeue=False)
    assert isinstance(env, SLURMEnvironment) and env.auto_requeue is False  # Lightning installs no USR1 handler
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "40_3"

    monkeypatch.setenv("SLURM_STEP_ID", "0")  # inside srun
    check_task_layout(2, 1)
    with pytest.raises(ValueError, match=r"SLURM started 2 tasks but trainer.num_nodes x trainer.devices = 1 x 1 = 1"):
        check_task_layout(1, 1)  # Lightning would silently run two independent trainings

    (tmp_path / "checkpoints").mkdir()
    torch.save({"global_step": 3}, tmp_path / "checkpoints" / "last.ckpt")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued attempt continues its run directory
    assert resolve_resume(None, tmp_path) == str(tmp_path / "checkpoints" / "last.ckpt")


def test_truncated_checkpoints_are_reported_and_skipped(tmp_path, caplog):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    torch.save({"global_step": 3}, ckpts / "step0000003.ckpt")
    torch.save({"global_step": 4}, ckpts / "preempted.ckpt")
    data = (ckpts / "preempted.ckpt").read_bytes()
    (ckpts / "preempted.ckpt").write_bytes(data[: len(data) // 2])
    assert find_resume_checkpoint(tmp_path) == ckpts / "step0000003.ckpt"
    assert f"checkpoint {ckpts / 'preempted.ckpt'} is corrupt, truncated" in caplog.text
    with pytest.raises(CheckpointError, match="is corrupt, truncated or not a weights-only checkpoint"):
        resolve_resume(str(ckpts / "preempted.ckpt"), tmp_path)  # an explicit path fails loudly


def _launcher(overrides: list[str]):
    register_resolvers()
    GlobalHydra.instance().clear()
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*validated against ConfigStore schema")  # on purpose
        cfg = hydra.compose("train", overrides=["hydra/launcher=submitit_slurm", *overrides], return_hydra_config=True)
    GlobalHydra.instance().clear()
    return cfg


def test_launcher_layout_follows_the_trainer():
    cfg = _launcher(["trainer=ddp", "trainer.accelerator=gpu", "trainer.num_nodes=4", "trainer.devices=8", "data.num_workers=9"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"], launcher["cpus_per_task"]) == (4, 8, 8, 10)
    assert launcher["additional_parameters"] == {"signal": "USR1@120", "requeue": True}
    cpu = OmegaConf.to_container(_launcher(["trainer.accelerator=cpu"]).hydra.launcher, resolve=True)
    assert cpu["gpus_per_node"] is None and cpu["nodes"] == cpu["tasks_per_node"] == 1
    with pytest.raises(Exception, match="state trainer.accelerator=gpu"):
        OmegaConf.to_container(_launcher(["trainer=ddp"]).hydra.launcher, resolve=True)  # accelerator: auto


# ------------------------------------------------------------------ digests, callback settings
def test_bit_digest_sees_one_flipped_bit():
    t = torch.randn(1000)
    flipped = t.clone()
    flipped.view(torch.int32)[517] ^= 1
    assert bit_digest(t) == bit_digest(t.clone()) and bit_digest(t) != bit_digest(flipped)
    assert bit_digest(torch.tensor([True, False])) != bit_digest(torch.tensor([False, True]))


def test_preemption_rejects_unknown_signal_names(tmp_path):
    with pytest.raises(ValueError, match="requeue_signal='USR1' is not a signal name"):
        Preemption(str(tmp_path), "preempted.ckpt", "USR1", True, True)
    assert Preemption(str(tmp_path), "p.ckpt", "SIGUSR2", False, True).path == tmp_path / "p.ckpt"


def test_gpus_per_node_needs_an_explicit_accelerator():
    assert slurm_gpus_per_node("gpu", 8) == 8 and slurm_gpus_per_node("cpu", 8) is None
    with pytest.raises(ConfigError, match="trainer.accelerator='auto'"):
        slurm_gpus_per_node("auto", 8)
