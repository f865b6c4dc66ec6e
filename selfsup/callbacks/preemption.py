"""The one owner of the preemption signals: save at the next step boundary, requeue, exit.

Who owns which signal while ``trainer.fit`` trains (handlers installed at train start, the previous
ones restored at train end):

- ``requeue_signal`` (``SIGUSR1``; SLURM sends it ``N`` s before the time limit with
  ``--signal=USR1@N``, or on ``scancel --signal=USR1 <job>``): **this callback**. At the end of the
  current training step every rank saves one checkpoint together (``<dirpath>/<filename>``); once
  Lightning has logged that step, the loggers are flushed (wandb marked preempting and closed); then,
  inside a SLURM job, rank 0 runs ``scontrol requeue <job>``; every process exits with code
  ``128 + signal``. The requeued job finds
  the checkpoint in the same run directory and continues exactly (see ``selfsup.run``).
- ``SIGTERM`` (``scancel``, a SLURM preemption with ``PreemptMode=REQUEUE/CANCEL``, the time limit
  without ``--signal``, ``kill``, ``docker stop``): **this callback**, the same save and exit, no
  requeue (SLURM requeues preempted jobs itself when configured to).
- ``SIGUSR2``: submitit's own handler when the job was launched by the submitit launcher; our
  launcher config makes SLURM send ``USR1`` instead, so submitit's never fires.
- Lightning's handlers are not used: ``SLURMEnvironment(auto_requeue=False)`` installs no ``USR1``
  handler (``selfsup.training.slurm.cluster_environment``), and its ``SIGTERM`` handler is replaced
  while training. Lightning's ``auto_requeue`` handler calls ``trainer.save_checkpoint`` *inside* the
  signal handler, i.e. possibly in the middle of a step (after the optimiser step, before the EMA
  update): that checkpoint cannot resume exactly, and its collectives can interleave with the step's.

The handlers only record the signal. At every step boundary the ranks agree (one all-reduce of a
scalar) on whether any of them received one, so they all save at the same step even when the
signal reaches them at different moments.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from selfsup.training.slurm import requeue_job, slurm_job_id

log = logging.getLogger("selfsup")

STOP, REQUEUE = 1, 2  # agreed codes: the larger wins


class Preempted(SystemExit):
    """Training stopped at a signal after saving its state; the exit code is ``128 + signal``.

    A ``SystemExit`` so that launchers (submitit) treat it as an interruption, not a failed task.
    """


class Preemption(L.Callback):
    """Deferred, collective checkpoint at a preemption signal, then requeue (SLURM) and exit.

    Config keys (``configs/callbacks/pretrain.yaml``): ``dirpath``, ``filename`` (the checkpoint
    written at the signal; ``resume=auto`` finds it), ``requeue_signal`` (a ``signal`` name,
    ``SIGUSR1``), ``requeue`` (run ``scontrol requeue`` inside a SLURM job), ``handle_sigterm``.
    """

    def __init__(self, dirpath: str, filename: str, requeue_signal: str, requeue: bool, handle_sigterm: bool) -> None:
        try:
            self.requeue_signal = signal.Signals[requeue_signal]
        except KeyError:
            raise ValueError(f"callbacks.preemption.requeue_signal={requeue_signal!r} is not a signal name (e.g. SIGUSR1)") from None
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.requeue = requeue
        self.handle_sigterm = handle_sigterm
        self._received: signal.Signals | None = None
        self._stopping: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    # ------------------------------------------------------------------ handlers
    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self._received != self.requeue_signal:  # the requeue signal wins over SIGTERM
            self._received = signal.Signals(signum)

    def _install(self) -> None:
        signals = [self.requeue_signal] + ([signal.SIGTERM] if self.handle_sigterm else [])
        for signum in signals:
            if signum not in self._previous:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._record)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning's _SignalConnector registered its handlers: ours replace them while training
        self._install()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._received is not None and trainer.is_global_zero:
            log.warning("%s arrived after the last step: training completed, nothing to resume", self._received.name)
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, Preempted):
            self._restore()

    # ------------------------------------------------------------------ the step boundary
    def _agreed_code(self, trainer: L.Trainer, device: torch.device) -> int:
        code = 0 if self._received is None else (REQUEUE if self._received == self.requeue_signal else STOP)
        if trainer.world_size == 1:
            return code
        return int(trainer.strategy.reduce(torch.tensor(code, device=device), reduce_op="max").item())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._stopping is not None:
            return
        code = self._agreed_code(trainer, pl_module.device)
        if code:
            # the state after this step, saved where Lightning's own step checkpoints are saved
            trainer.save_checkpoint(self.path)  # collective; model, EMA, optimiser, loops, data position
            self._stopping = self.requeue_signal if code == REQUEUE else signal.SIGTERM
            if trainer.is_global_zero:
                log.warning(
                    "%s: saved %s at step %d (epoch %d); stopping",
                    self._stopping.name, self.path, trainer.global_step, trainer.current_epoch,
                )

    # Lightning logs the step's metrics after on_train_batch_end: stop at the next hook, so the
    # history of this attempt ends with the step the checkpoint holds.
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._exit_if_stopping(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._exit_if_stopping(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._exit_if_stopping(trainer)

    def _exit_if_stopping(self, trainer: L.Trainer) -> None:
        if self._stopping is None:
            return
        signum, step = self._stopping, trainer.global_step
        exit_code = 128 + int(signum)
        job = slurm_job_id()
        requeued = False
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.save()
                if isinstance(logger, WandbLogger):  # one run across attempts: close this part cleanly
                    logger.experiment.mark_preempting()
                    logger.experiment.finish(exit_code=exit_code)
            if signum == self.requeue_signal and self.requeue and job is not None:
                requeued = requeue_job(job)
            how = f"requeued SLURM job {job}" if requeued else "continue with resume=auto in the same run directory"
            log.warning("preempted at step %d: %s", step, how)
        # No rank exits before the requeue is done (srun --kill-on-bad-exit would kill rank 0 first).
        trainer.strategy.barrier("preemption")
        # SLURM answers the requeue with SIGTERM to every task: expected, we are leaving anyway.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Preempted(exit_code)
