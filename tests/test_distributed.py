"""Data parallelism on CPU, in real processes (gloo): two DDP processes reach the parameters of one
process that accumulates the same two micro-batches with the same masks; FSDP reaches them too,
with the EMA target sharded like the encoder; every rank ends identical.
"""

from __future__ import annotations

import pytest
import torch

from selfsup.training.checkpoint import read_checkpoint
from selfsup.training.export import load_encoder
from tests.helpers import run_command, summary_of

pytestmark = pytest.mark.slow

SMALL = [
    "data.num_workers=0", "data.persistent_workers=false", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=0", "backbone.depth=2", "predictor.depth=1", "data.batch_size=8",
    "callbacks.model_checkpoint.export_backbones=true",
]
DDP = "python tools/train.py experiment=ijepa trainer=ddp trainer.devices=2"
ACCUMULATE = "python tools/train.py experiment=ijepa data.accumulate_grad_batches=2"
FSDP = "python tools/train.py experiment=ijepa trainer=fsdp trainer.devices=2"
DMT_DDP = "python tools/train.py experiment=dmt_jepa trainer=ddp trainer.devices=2"
DMT_ACCUMULATE = "python tools/train.py experiment=dmt_jepa data.accumulate_grad_batches=2"


def _run(command: str, tmp_path, name: str, *extra: str, task: str = "ijepa"):
    # one intra-op thread per process (what Lightning picks for 2 processes on 2 cores), for all runs
    proc = run_command(command, tmp_path, [*SMALL, f"run_name={name}", *extra], timeout=1200, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    return proc, read_checkpoint(tmp_path / task / name / "checkpoints" / "last.ckpt")


def _max_difference(a: dict, b: dict) -> float:
    assert set(a) == set(b)
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    return _run(DDP, tmp_path_factory.mktemp("ddp"), "ddp")


def test_two_ddp_processes_match_one_process_accumulating_their_micro_batches(ddp_run, tmp_path):
    proc, ddp = ddp_run
    out = proc.stdout + proc.stderr
    assert "6 steps" in summary_of(proc.stdout)
    assert "global batch 16 (8 images x 1 micro-batch(es) x 2 process(es))" in out  # printed with the scaled lrs
    assert "scales the learning rates by 0.25" in out
    assert "rank consistency: all 2 processes hold bit-identical copies" in out  # every rank ends identical

    proc1, single = _run(ACCUMULATE, tmp_path, "accumulate")
    assert "global batch 16 (8 images x 2 micro-batch(es) x 1 process(es))" in proc1.stdout + proc1.stderr
    assert single["global_step"] == ddp["global_step"] == 6
    assert single["ImageDataModule"] == ddp["ImageDataModule"] == {"epoch": 1, "next_batch": 3}
    same = _max_difference(ddp["state_dict"], single["state_dict"])
    assert same < 1e-5, same  # float summation order only (measured: ~1e-7)

    # control: the same global batch drawn as ONE micro-batch of 16 has other masks -> other weights
    _, other = _run(ACCUMULATE, tmp_path, "one_batch", "data.accumulate_grad_batches=1", "data.batch_size=16")
    assert _max_difference(ddp["state_dict"], other["state_dict"]) > 100 * max(same, 1e-7)


def test_fsdp_shards_the_ema_target_and_matches_ddp(ddp_run, tmp_path):
    _, ddp = ddp_run
    proc, fsdp = _run(FSDP, tmp_path, "fsdp")
    out = proc.stdout + proc.stderr
    held = out.split("elements held by rank 0 / total: ")[1].splitlines()[0]
    for part in held.split(", "):  # e.g. "target_encoder 478752/957120": half of every module on each rank
        name, counts = part.rsplit(" ", 1)
        mine, total = map(int, counts.split("/"))
        assert 0.4 * total < mine < 0.6 * total, part
    assert "target_encoder" in held
    assert _max_difference(ddp["state_dict"], fsdp["state_dict"]) < 1e-5  # the full checkpoint, gathered
    state = fsdp["state_dict"]
    exported, _ = load_encoder(tmp_path / "ijepa" / "fsdp" / "checkpoints" / "last.target_encoder.safetensors")
    assert all(torch.equal(v, state[f"objective.target_encoder.{k}"]) for k, v in exported.items())


def test_dmt_jepa_on_two_ddp_processes_matches_one_process_accumulating(tmp_path):
    """DMT-JEPA (both heads and their EMA included) under DDP equals gradient accumulation."""
    proc, ddp = _run(DMT_DDP, tmp_path, "ddp", task="dmt_jepa")
    assert "rank consistency: all 2 processes hold bit-identical copies" in proc.stdout + proc.stderr
    _, single = _run(DMT_ACCUMULATE, tmp_path, "accumulate", task="dmt_jepa")
    assert any(k.startswith("objective.target_head.") for k in ddp["state_dict"])
    same = _max_difference(ddp["state_dict"], single["state_dict"])
    assert same < 1e-5, same
