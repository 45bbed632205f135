"""Registries of per-token policy losses and of TRL's loss aggregations for group-relative RL.

A **policy loss** is a pure function of per-token tensors that returns the loss to minimise at every completion token
and the metrics to log::

    @POLICY_LOSSES.register("name")
    def my_loss(*, ratio: Tensor, advantages: Tensor, mask: Tensor, my_knob: float = 1.0) -> tuple[Tensor, dict]:
        ...  # per_token_loss [B, T], {"my_loss/metric": [B, T] tensor (or broadcastable)}

Its keyword-only parameters named in `POLICY_LOSS_INPUTS` are per-call inputs (`GroupRLTrainer` computes them at
every step and passes each entry only the ones its signature names); the others are hyper-parameters, set from a
recipe's ``policy_loss_kwargs``. An input with a default (``None``) is optional: the trainer may not have it (see
``ref_per_token_logps``). Shapes: B completions, T completion positions.

* ``ratio`` ``[B, T]``: importance ratio ``exp(log π_θ − log π_old)`` per token (carries the gradient);
* ``per_token_logps`` ``[B, T]``: log π_θ of each completion token (carries the gradient);
* ``old_per_token_logps`` ``[B, T]``: log π_old, the sampling policy's (detached; equal to ``per_token_logps`` when
  the batch is trained on once);
* ``ref_per_token_logps`` ``[B, T]`` or None: log π_ref of the initial (reference) policy; TRL computes it only when
  ``beta`` > 0, so it is None otherwise;
* ``advantages`` ``[B, 1]`` (one per completion, broadcast over its tokens) or ``[B, T]``;
* ``mask`` ``[B, T]``: 1 at the completion tokens that count (TRL's completion mask times its tool mask);
* ``entropies`` ``[B, T]``: the policy's token entropies (detached);
* ``epsilon_low``, ``epsilon_high`` (floats): TRL's clip range, its ``epsilon`` / ``epsilon_high`` config fields.

The trainer adds TRL's KL term (``beta`` > 0) to the per-token loss, reduces it with the **aggregation** TRL's
``loss_type`` names (`AGGREGATIONS`: ``fn(per_token_loss, mask, *, <AGGREGATION_INPUTS it needs>) -> scalar``) and
logs the global masked mean of every metric under its name. Unknown names and hyper-parameters are errors listing the
valid ones; `validate_policy_loss` runs one call on dummy inputs at start-up so a loss's own value checks fire before
the first step.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ..registry import Registry, Spec

POLICY_LOSS_INPUTS = ("ratio", "per_token_logps", "old_per_token_logps", "ref_per_token_logps", "advantages", "mask",
                      "entropies", "epsilon_low", "epsilon_high")
# What the trainer hands an aggregation, beside the per-token loss and mask (see `aggregations.py`).
AGGREGATION_INPUTS = ("accumulation", "max_completion_length", "num_items_in_batch", "num_processes",
                      "generation_steps")


def _dummy_inputs(reference_logps: bool) -> dict[str, Any]:
    # Two completions of three tokens, mixed-sign advantages, varied entropies (HAPO takes a quantile of them).
    logps = torch.full((2, 3), -1.0)
    return {"ratio": torch.ones(2, 3), "per_token_logps": logps, "old_per_token_logps": logps,
            "ref_per_token_logps": logps if reference_logps else None, "advantages": torch.tensor([[1.0], [-1.0]]),
            "mask": torch.ones(2, 3), "entropies": torch.linspace(0.1, 2.0, 6).view(2, 3), "epsilon_low": 0.2,
            "epsilon_high": 0.2}


def _dummy_call(spec: Spec, hparams: dict[str, Any], *, reference_logps: bool = True) -> None:
    inputs = _dummy_inputs(reference_logps)
    spec.fn(**{key: inputs[key] for key in spec.inputs}, **hparams)


POLICY_LOSSES: Registry[Spec] = Registry("policy_loss", inputs=POLICY_LOSS_INPUTS, validator=_dummy_call)
AGGREGATIONS: Registry[Spec] = Registry("loss_type (policy-loss aggregation)", inputs=AGGREGATION_INPUTS)


def validate_policy_loss(name: str, hparams: Mapping[str, Any], *, reference_logps: bool = True) -> Spec:
    """Check a recipe's ``policy_loss`` / ``policy_loss_kwargs`` before training: the name, the hyper-parameter names,
    then one call on dummy inputs (the loss's own value checks). ``reference_logps``: whether the trainer will supply
    ``ref_per_token_logps`` (TRL: only with ``beta`` > 0); a loss that needs them fails here otherwise."""
    spec = POLICY_LOSSES.check_hparams(name, hparams)
    _dummy_call(spec, dict(hparams), reference_logps=reference_logps)
    return spec


def compute_policy_loss(name: str, hparams: Mapping[str, Any], **inputs: Any) -> tuple[torch.Tensor, dict]:
    """``(per_token_loss [B, T], metrics)`` of the policy loss ``name``; ``inputs``: every `POLICY_LOSS_INPUTS`
    the caller has (each loss receives the ones it declares)."""
    spec = POLICY_LOSSES.get(name)
    return spec.fn(**{key: inputs[key] for key in spec.inputs}, **hparams)


def aggregate(loss_type: str, per_token_loss: torch.Tensor, mask: torch.Tensor, **inputs: Any) -> torch.Tensor:
    """The scalar loss TRL's ``loss_type`` makes of ``per_token_loss`` ``[B, T]`` under ``mask``; ``inputs``: every
    `AGGREGATION_INPUTS` value (each aggregation receives the ones it declares)."""
    spec = AGGREGATIONS.get(loss_type)
    return spec.fn(per_token_loss, mask, **{key: inputs[key] for key in spec.inputs})
