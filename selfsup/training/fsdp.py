"""Fully sharded data parallelism (PyTorch FSDP2, ``fully_shard``) for JEPA objectives.

``trainer=fsdp`` uses ``FSDPStrategy``: Lightning's ``ModelParallelStrategy`` with every process in
one data-parallel group (no tensor parallelism), which calls ``shard_objective`` from
``PretrainModule.configure_model``. FSDP2 shards **every parameter along its first dimension**
across the ranks, so the EMA target, sharded with the same rules as the encoder, holds on each rank
exactly the rows of each tensor that the encoder holds: the EMA update
(``selfsup.models.ema.ema_update_``) runs shard-wise on local data, without any communication.

Sharding units: every module of ``block_classes`` (transformer blocks: their parameters are
gathered just for their own forward and backward), then every top-level module of the objective
(encoder, target encoder, predictor, ...). The objective calls some of them through methods other
than ``forward`` (``encoder.forward_tokens(...)``): those are listed in ``forward_methods`` and
registered with FSDP so that they gather the parameters like ``forward`` does.

Checkpoints are full state dicts assembled on rank 0 (``save_distributed_checkpoint=false``): the
same file and keys as a DDP run, so resuming, exporting backbones and probing work unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch
from hydra.utils import get_class
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.tensor import DTensor

log = logging.getLogger("selfsup")


def is_sharded(module: nn.Module) -> bool:
    """True when any parameter of ``module`` is a DTensor shard."""
    return any(isinstance(p, DTensor) for p in module.parameters())


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with sharded tensors gathered in full.

    Collective when ``module`` is sharded: every rank must call it, in the same order.
    """
    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in module.state_dict().items()}


def reshard(module: nn.Module) -> None:
    """Free the gathered parameters an FSDP root keeps after a forward without backward (the EMA
    target), so that ``module.parameters()`` are shards again."""
    from torch.distributed.fsdp import FSDPModule

    for sub in module.modules():
        if isinstance(sub, FSDPModule):
            sub.reshard()


@contextmanager
def gradient_sync_disabled(strategy: Any, module: nn.Module) -> Iterator[None]:
    """No gradient communication in the backward passes inside: DDP's ``no_sync`` via Lightning's
    ``block_backward_sync``, FSDP2's ``set_requires_gradient_sync(False)``; nothing on one process."""
    from torch.distributed.fsdp import FSDPModule

    roots = [m for m in module.children() if isinstance(m, FSDPModule)]
    for root in roots:
        root.set_requires_gradient_sync(False)
    try:
        block = getattr(strategy, "block_backward_sync", None)
        if block is None:
            yield
        else:
            with block():
                yield
    finally:
        for root in roots:
            root.set_requires_gradient_sync(True)


def shard_objective(
    objective: nn.Module, mesh: Any, block_classes: tuple[type, ...], forward_methods: list[str], reshard_after_forward: bool
) -> None:
    """Apply ``fully_shard`` to the blocks, then to each top-level module of ``objective`` (see module doc)."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for child in objective.children():
        for sub in child.modules():
            if isinstance(sub, block_classes):
                fully_shard(sub, mesh=mesh, reshard_after_forward=reshard_after_forward)
        fully_shard(child, mesh=mesh, reshard_after_forward=reshard_after_forward)
        for name in forward_methods:
            if callable(getattr(child, name, None)):
                register_fsdp_forward_method(child, name)
    loose = [n for n, p in objective.named_parameters() if not isinstance(p, DTensor)]
    if loose:
        raise ValueError(
            f"FSDP: parameters directly on the objective are not sharded (and would not be synchronised): "
            f"{loose[:5]}; put them in a submodule"
        )
    if mesh.get_rank() == 0:
        held = ", ".join(
            f"{name} {sum(p.to_local().numel() for p in child.parameters())}/{sum(p.numel() for p in child.parameters())}"
            for name, child in objective.named_children()
        )
        log.info("FSDP over %d processes: elements held by rank 0 / total: %s", mesh.size(), held)


class FSDPStrategy(ModelParallelStrategy):
    """FSDP2 over all processes (``data_parallel_size`` = world size, no tensor parallelism).

    Config keys (``configs/trainer/fsdp.yaml`` strategy): ``block_classes`` (import paths of the
    modules sharded individually), ``forward_methods`` (methods the objective calls instead of
    ``forward``), ``reshard_after_forward`` (true: ZeRO-3, parameters gathered again for the backward;
    false: kept from forward to backward, ZeRO-2 memory), ``save_distributed_checkpoint`` (false: one
    full checkpoint file written by rank 0), ``process_group_backend`` (null: nccl on GPU, gloo on CPU),
    ``timeout_minutes``.
    """

    def __init__(
        self,
        block_classes: list[str],
        forward_methods: list[str],
        reshard_after_forward: bool,
        save_distributed_checkpoint: bool,
        process_group_backend: str | None,
        timeout_minutes: float,
    ) -> None:
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timedelta(minutes=timeout_minutes),
        )
        self.block_classes = tuple(get_class(path) for path in block_classes)
        self.forward_methods = list(forward_methods)
        self.reshard_after_forward = reshard_after_forward

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # every process shards
        super().setup_environment()

    def shard_objective(self, objective: nn.Module) -> None:
        shard_objective(
            objective, self.device_mesh["data_parallel"], self.block_classes, self.forward_methods, self.reshard_after_forward
        )
