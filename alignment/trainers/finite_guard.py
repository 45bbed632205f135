"""Non-finite values stop a run: a NaN/inf gradient ends training before it reaches the weights or a checkpoint, and
restored per-process state must be finite.

Why a callback of its own: the HF Trainer (5.x) hides both signals. With `logging_nan_inf_filter` (default True) a
NaN/inf step loss is replaced by the running mean before it is accumulated, so the logged `loss` stays finite; the
gradient norm is only logged every `logging_steps` and the weights are updated, checkpointed and finally saved
regardless. A non-finite loss whose gradient is finite leaves the weights untouched (the filter then only hides it
from the log); every other NaN/inf reaches the gradients, so the gradients are what is checked, every optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from transformers import TrainerCallback

LIKELY_CAUSES = (
    "Likely causes: a learning rate too high for this model/loss (lower `learning_rate`, keep `max_grad_norm` > 0, "
    "add warmup); fp16 overflow (use `bf16: true`, or fp32 on CPU); a bad per-example data column (a huge or "
    "non-finite `weight`/`margin`/reward); a loss hyper-parameter that divides by ~0 (e.g. a tiny `beta`)."
)


class NonFiniteTrainingError(FloatingPointError):
    """Raised inside `trainer.train()` when the gradients of an optimizer step are not finite."""


def nonfinite_entries(state: Any, prefix: str = "") -> list[str]:
    """Key paths (``buffers.ema``, ``history[2]``) of the tensors/floats in a nested state that hold NaN or inf.

    Integer and boolean tensors (counters, RNG states, masks) are finite by construction and skipped.
    """
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            return [] if bool(torch.isfinite(state).all()) else [prefix or "<tensor>"]
        return []
    if isinstance(state, float):
        return [] if math.isfinite(state) else [prefix or "<value>"]
    if isinstance(state, Mapping):
        return [path for key, value in state.items()
                for path in nonfinite_entries(value, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(state, (list, tuple)):
        return [path for index, value in enumerate(state) for path in nonfinite_entries(value, f"{prefix}[{index}]")]
    return []


def check_finite_state(state: Any, *, source: str) -> None:
    """`ValueError` naming `source` (the file) and the keys if a restored state holds NaN/inf.

    A run that diverged after its last good checkpoint writes such state; resuming from it would train on NaN
    statistics (e.g. β-DPO's running margin, a domain weight) and diverge again at once.
    """
    bad = nonfinite_entries(state)
    if bad:
        raise ValueError(
            f"{source} holds non-finite values (NaN/inf) in {bad[:10]}{' ...' if len(bad) > 10 else ''}: the run "
            "diverged before this checkpoint was written. Resume from an earlier checkpoint (with a lower "
            "`learning_rate`) or start again."
        )


def _gradients(optimizer, model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, gradient) of everything the optimizer will step: its param groups include parameters outside
    the model (SparsePO's mask heads); the model's own parameters are the fall-back."""
    groups = getattr(optimizer, "param_groups", None) if optimizer is not None else None
    params: Iterable[torch.Tensor] = (
        (p for group in groups for p in group["params"]) if groups else (model.parameters() if model else ()))
    return [(p, p.grad) for p in params if p.grad is not None]


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The shard this rank holds (FSDP2 gradients are DTensors)."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _any_nonfinite(grads: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """A 0/1 flag, 1 if any gradient holds NaN/inf: one fused norm per tensor (the pass `clip_grad_norm_` makes),
    whose NaN/inf propagates. A finite fp16 tensor whose norm overflows would be flagged too, so flagged tensors
    are checked element-wise before anything is reported."""
    if not grads:
        return torch.zeros((), device=device)
    norms = torch.stack([norm.float().to(device) for norm in torch._foreach_norm(grads)])
    if bool(torch.isfinite(norms).all()):
        return torch.zeros((), device=device)
    return torch.tensor(float(any(not bool(torch.isfinite(g).all()) for g in grads)), device=device)


class NonFiniteGuard(TrainerCallback):
    """Stop training with `NonFiniteTrainingError` at the first optimizer step whose gradients hold NaN/inf.

    The check runs in `on_pre_optimizer_step`: after the gradients are reduced across ranks and clipped, before the
    optimizer applies them. So the weights never become NaN, and the error leaves `trainer.train()` before that
    step's log, evaluation or checkpoint and before the script's `save_model`: the process exits non-zero with
    nothing saved for the bad step. Every rank computes the same verdict: the flag is max-reduced over the
    ranks (DDP gradients are already identical after the all-reduce; FSDP ranks hold different shards), one scalar
    collective per step.

    fp16 with loss scaling overflows on purpose now and then (the scaler skips that step and lowers the scale), so
    there the run stops only after `max_fp16_overflows` overflowing steps in a row.

    Not covered: DeepSpeed keeps its gradients out of the parameters and steps inside `backward`; there only the
    logged `grad_norm` / `loss` are checked (`on_log`, every `logging_steps`, before that step's checkpoint).
    """

    def __init__(self, *, max_fp16_overflows: int = 20):
        self.max_fp16_overflows = max_fp16_overflows
        self._overflows = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        pairs = _gradients(optimizer, model)
        grads = [_local(g) for _, g in pairs]
        # The flag lives where the process group communicates (NCCL: this rank's GPU), even if gradients are offloaded.
        flag = _any_nonfinite(grads, args.device)
        if args.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if not bool(flag):
            self._overflows = 0
            return
        step = state.global_step + 1  # the step being taken: its checkpoint would be `checkpoint-{step}`
        if args.fp16:
            self._overflows += 1
            if self._overflows < self.max_fp16_overflows:
                return
            raise NonFiniteTrainingError(
                f"Training stopped at step {step}: the gradients overflowed fp16 in {self._overflows} steps in a "
                f"row, so loss scaling skipped every update. {LIKELY_CAUSES}")
        names = {id(p): name for name, p in model.named_parameters()} if model is not None else {}
        bad = [names.get(id(p), "<parameter outside the model>") for p, g in pairs
               if not bool(torch.isfinite(_local(g)).all())]
        where = (f"in {len(bad)} of {len(pairs)} parameter tensors (e.g. {bad[:3]})" if bad
                 else "on another rank")
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])).item() \
            if grads else float("nan")
        raise NonFiniteTrainingError(
            f"Training stopped at step {step}: the gradient is not finite (norm {norm}) {where}. The update was not "
            f"applied and nothing was saved for this step; checkpoints already in {args.output_dir} predate it "
            f"(resume from one with the cause fixed). {LIKELY_CAUSES}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The logged values are reduced over the ranks, so every rank agrees; this runs before the same step's
        # evaluation and checkpoint. It catches what the per-step check cannot see (DeepSpeed) and a NaN loss logged
        # with `logging_nan_inf_filter: false`.
        for key in ("loss", "grad_norm"):
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value) and not args.fp16:
                raise NonFiniteTrainingError(
                    f"Training stopped at step {state.global_step}: the logged `{key}` is {value}. {LIKELY_CAUSES}")
