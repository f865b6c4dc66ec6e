"""Where a LightningDataModule's training stream is, saved in the checkpoint for an exact resume."""

from __future__ import annotations

from typing import Any


class TrainingPosition:
    """Mixin for data modules whose training batches carry ``epoch`` and ``batch_index``
    (``ResumableBatchSampler`` + a collator that copies them): records ``(epoch, next batch)`` after
    each training batch, returns it from ``state_dict`` (Lightning stores it in the checkpoint) and,
    after ``load_state_dict``, exposes it as ``self._resume`` for the next training sampler
    (``sampler.resume_at(*self._resume)``)."""

    _position: tuple[int, int] | None = None  # (epoch, next batch) of the training stream
    _resume: tuple[int, int] | None = None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.training and isinstance(batch, dict) and "batch_index" in batch:
            self._position = (batch["epoch"], batch["batch_index"] + 1)
        return batch

    def state_dict(self) -> dict[str, Any]:
        if self._position is None:
            return {}
        return {"epoch": self._position[0], "next_batch": self._position[1]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["next_batch"]))
            self._position = self._resume
