"""Preemption: on SIGTERM, save a checkpoint at the end of the current optimizer step and stop.

Slurm (``scancel``, preemption, time limit), Kubernetes and the cloud schedulers send SIGTERM, wait a grace period
(Slurm's ``KillWait``, 30 s by default; ``sbatch --signal=TERM@<seconds>`` sends it earlier), then SIGKILL. The
default SIGTERM action kills Python at once and loses everything since the last scheduled checkpoint.

`PreemptionCallback` replaces the handler while `trainer.train` runs. The handler only records the signal (no I/O,
no collectives inside a signal handler: it runs between two bytecodes of whatever the main thread was doing). At the
next `on_step_end`, i.e. after a complete optimizer step, the callback asks the Trainer to save and stop
(``control.should_save``, ``control.should_training_stop``), so `checkpoint-<step>` is written by the Trainer's own
`_save_checkpoint` on every rank, with the optimizer, scheduler, RNG and this project's per-process state, and
``resume_from_checkpoint: true`` continues from it (`alignment.resume`).

Several processes: the signal reaches the ranks at different times (or only some of them), but saving involves
collectives (ZeRO/FSDP gathers, barriers), so all ranks must decide at the same step. Every `on_step_end` takes the
max of the flag over ranks (one all-reduce of a single integer per optimizer step, negligible next to the gradient
all-reduce); a rank that has not seen the signal yet stops with the others.

Exit status: `PREEMPTED_EXIT_CODE` = 143 (128 + SIGTERM), what a process killed by SIGTERM reports, so anything that
already treats "terminated by SIGTERM" as preemption (Slurm, torchelastic, Kubernetes) reads it the same, while a
wrapper can tell it from success (0: the run finished, its final model was written and pushed) and from a crash
(1). A Slurm batch script requeues on it: ``srun python scripts/run_dpo.py ...; [ $? -eq 143 ] && scontrol requeue
$SLURM_JOB_ID``, with ``resume_from_checkpoint: true`` in the recipe. Under ``accelerate launch`` the ranks exit 143
but the launcher exits 1 (torchelastic re-raises the signal as an error); scripts/slurm/launch_node.sh reports 143
for a node that got the signal, and scripts/slurm/launch.slurm requeues on it.

The step plus the save must fit in the grace period. Under ``accelerate launch`` (torchelastic's agent) the agent
forwards SIGTERM to every rank and waits ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` seconds (default 30) before SIGKILL; raise
it for long steps. A SIGKILL in the middle of the save leaves an incomplete checkpoint, which the next resume skips.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import TrainerCallback

logger = logging.getLogger("alignment")

PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # 143, as if killed by SIGTERM: see the module docstring


def any_process(flag: bool) -> bool:
    """True if `flag` is set on any process of the default process group (max all-reduce), else this process's."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    # gloo reduces CPU tensors; NCCL (and the other accelerator backends) tensors on this process's device.
    gloo = torch.distributed.get_backend() == "gloo"
    value = torch.tensor([int(flag)], device="cpu" if gloo else torch.accelerator.current_accelerator())
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


class PreemptionCallback(TrainerCallback):
    """Save a checkpoint and stop training at the end of the optimizer step during which a signal arrived.

    Use `handling_signals()` around `trainer.train`; afterwards `preempted_at` is the global step that was saved
    (the same on every rank), or None if training ran to its end.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)):
        self.signals = signals
        self.received: int | None = None  # the signal number this process got, set by the handler
        self.preempted_at: int | None = None

    def _handle(self, signum, frame) -> None:
        self.received = signum  # only a flag: the Trainer saves at the next step end, outside the handler

    @contextmanager
    def handling_signals(self) -> Iterator[PreemptionCallback]:
        """Install the handler for `signals` and restore the previous handlers afterwards (also on errors)."""
        if threading.current_thread() is not threading.main_thread():
            # Python only lets the main thread set handlers; the default action (termination) stays in force.
            logger.warning("Training runs outside the main thread: SIGTERM will not save a checkpoint first.")
            yield self
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in self.signals}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def on_step_end(self, args, state, control, **kwargs):
        if any_process(self.received is not None):
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False  # the grace period is for the save; the resumed run evaluates
            self.preempted_at = state.global_step
        return control

    def message(self, output_dir: str, rank: int) -> str:
        name = signal.Signals(self.received).name if self.received is not None else "another rank's signal"
        return (f"rank {rank}: preempted ({name}): saved {output_dir}/checkpoint-{self.preempted_at} and stopped "
                f"at step {self.preempted_at}. The final model was NOT written. Run again with `resume_from_checkpoint: "
                f"true` to continue; exiting with status {PREEMPTED_EXIT_CODE}.")


__all__ = ["PREEMPTED_EXIT_CODE", "PreemptionCallback", "any_process"]
