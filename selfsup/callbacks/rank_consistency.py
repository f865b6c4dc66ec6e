"""Checks that every data-parallel process holds bit-identical weights (and EMA target, buffers).

DDP keeps replicas in sync only if every rank does exactly the same thing to them: a rank-dependent
branch, an unsynchronised buffer or an EMA computed from different values lets them drift silently.
This callback compares a digest of the raw bits of every tensor of the module across ranks at the end
of each epoch and of training, and fails naming the tensors that differ. Sharded (FSDP) tensors
differ by design and are skipped.
"""

from __future__ import annotations

import logging

import lightning as L
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

log = logging.getLogger("selfsup")

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bit_digest(tensor: torch.Tensor) -> torch.Tensor:
    """An int64 digest of the raw bits of ``tensor`` (position-weighted sum, wrapping)."""
    flat = tensor.detach().contiguous().view(-1)
    if flat.dtype == torch.bool:
        bits = flat.to(torch.int64)
    else:
        bits = flat.view(_INT_OF_SIZE[flat.element_size()]).to(torch.int64)
    weights = torch.arange(bits.numel(), device=bits.device, dtype=torch.int64) % 65521 + 1
    return (bits * weights).sum()


class RankConsistency(L.Callback):
    """Fails when the ranks' replicated tensors differ (see module doc).

    Config keys (``configs/callbacks/pretrain.yaml``): ``every_epoch`` (also check at each epoch end,
    not only at the end of training).
    """

    def __init__(self, every_epoch: bool) -> None:
        self.every_epoch = every_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_epoch:
            self.check(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size == 1:
            return
        tensors = {k: v for k, v in pl_module.state_dict().items() if not isinstance(v, DTensor)}
        if not tensors:
            return
        digests = torch.stack([bit_digest(v) for v in tensors.values()]).to(pl_module.device)
        everyone = [torch.empty_like(digests) for _ in range(trainer.world_size)]
        dist.all_gather(everyone, digests)
        gathered = torch.stack(everyone)  # [world, n]
        differ = (gathered != gathered[0]).any(dim=0).nonzero().flatten().tolist()
        names = list(tensors)
        if differ:
            shown = ", ".join(names[i] for i in differ[:8])
            raise RuntimeError(
                f"the {trainer.world_size} processes hold different weights at step {trainer.global_step} "
                f"({len(differ)} of {len(names)} tensors differ: {shown}): a rank-dependent computation broke "
                "data parallelism"
            )
        if trainer.is_global_zero:
            log.info(
                "rank consistency: all %d processes hold bit-identical copies of %d tensors at step %d",
                trainer.world_size, len(names), trainer.global_step,
            )
