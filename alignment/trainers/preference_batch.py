"""What a collated preference batch holds, and the `PreferenceBatch` a `PreferenceTrainer` step builds from it.

A collated batch (TRL's preference collator, then `ExtraColumnsCollator`) stacks the chosen rows over the rejected
ones: ``input_ids`` / ``attention_mask`` / ``completion_mask`` ``[2B, L]``, plus the per-example dataset columns
the loss registry declares (`preference_columns()`, ``[B]`` each). `model_inputs` is what the model is called with.

`PreferenceBatchBuilder` turns one step's forwards (`StepForward`) into the losses' `PreferenceBatch`: one table
from each kind of extra (per-example column, fused-LM-head output, turn ids, token weights, reference outputs) to
the function that provides its fields. A new per-example column is declared in the loss registry only
(`register_preference_column`, one line beside the loss that reads it): the collator, the signature columns,
`non_model_keys` and `column_fields` all call `preference_columns()` when they run, never at import, so a column
registered by a module imported after this one is kept too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from ..losses import PreferenceBatch
from ..losses.registry import EXTRAS, preference_columns
from ..losses.turns import AssistantTurnMarkers, completion_turn_ids
from ..token_weightings import compute_token_weights
from .metrics import gather_ratio

# Batch keys the model is never called with that the step reads itself: the masks and (TRL's precompute path)
# reference sums.
_STEP_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps"})


def non_model_keys() -> frozenset[str]:
    """Batch keys the model is never called with: `_STEP_KEYS` and the per-example columns only the losses read."""
    return _STEP_KEYS.union(preference_columns())


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the model's forward for ``batch`` (no KV cache: one full-sequence pass)."""
    excluded = non_model_keys()
    kwargs = {key: value for key, value in batch.items() if key not in excluded}
    kwargs["use_cache"] = False
    return kwargs


def completion_labels(batch: dict[str, Any]) -> torch.Tensor:
    """``[2B, L]`` labels for the fused LM head: the token ids on completion tokens, -100 on prompt and padding."""
    return batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)


# ---------------------------------------------------------------------------------------------- the step's batch
@dataclass(frozen=True)
class StepForward:
    """What one training/eval step's forwards produced, read by `PreferenceBatchBuilder` and its providers.

    Attributes:
        model: the module the step ran (the policy, possibly wrapped by DDP/DeepSpeed).
        inputs: the collated batch: ``[2B, L]`` chosen rows over rejected rows, ``[B]`` per-example columns.
        outputs: the policy's fused-LM-head output; per-token fields ``[2B, T']`` with ``T' >= T`` (prompt-learning
            PEFT prepends virtual positions).
        ref_logps: ``[2B, T']`` reference per-token log-probs, or None (reference-free losses only).
        token_mask: ``[2B, T]`` completion mask shifted by one (position t of the fused outputs scores token t+1).
        metrics: this mode's metric lists (TRL's ``_metrics[mode]``), for providers that log what they compute.
    """

    model: Any
    inputs: dict[str, Any]
    outputs: Any
    ref_logps: torch.Tensor | None
    token_mask: torch.Tensor
    metrics: dict[str, list[float]]

    def aligned(self, per_token: torch.Tensor) -> torch.Tensor:
        """``[2B, T]``: the positions of the real tokens of a per-token output (drops virtual prefix positions)."""
        return per_token[:, -self.token_mask.size(1):]

    @property
    def policy_logps(self) -> torch.Tensor:
        return self.aligned(self.outputs.log_probs)

    @property
    def mask(self) -> torch.Tensor:
        """``[2B, T]`` completion mask in the log-probs' dtype."""
        return self.token_mask.to(self.outputs.log_probs.dtype)


def _sides(prefix_less: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{name: [2B, ...]}`` -> ``{chosen_<name>: [B, ...], rejected_<name>: [B, ...]}`` (the collator stacks
    [chosen; rejected])."""
    fields = {}
    for name, value in prefix_less.items():
        fields[f"chosen_{name}"], fields[f"rejected_{name}"] = value.chunk(2, dim=0)
    return fields


def column_fields(step: StepForward) -> dict[str, Any]:
    """The per-example dataset columns (``[B]``): a built-in column under its own field (None where the dataset
    has none), a registered one (no field of its own) in ``columns`` where the dataset has it."""
    fields: dict[str, Any] = {}
    columns: dict[str, torch.Tensor] = {}
    for column in preference_columns():
        value = step.inputs.get(column)
        if EXTRAS[column].fields:
            fields.update(dict.fromkeys(EXTRAS[column].fields, value))
        elif value is not None:
            columns[column] = value
    return {**fields, "columns": columns}


def fused_output_fields(step: StepForward, *, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The fused-LM-head outputs ``names`` the selected losses require (e.g. ``log_sum_sq_probs``), as the fields
    ``chosen_<name>`` / ``rejected_<name>``."""
    per_token = {}
    for name in names:
        value = getattr(step.outputs, name, None)
        if value is None:
            raise RuntimeError(f"The fused LM head returned no `{name}`; was the model re-patched?")
        per_token[name] = step.aligned(value)
    return _sides(per_token)


def turn_id_fields(step: StepForward, *, markers: AssistantTurnMarkers) -> dict[str, torch.Tensor]:
    """``chosen_turn_ids`` / ``rejected_turn_ids`` ``[B, T]``: each completion token's assistant-turn index."""
    # token_mask is the completion mask shifted by one (position t scores token t+1), so shift the ids the same way
    return _sides({"turn_ids": completion_turn_ids(step.inputs["input_ids"][:, 1:], step.token_mask, markers)})


def token_weight_fields(step: StepForward, *, name: str, hparams: dict[str, Any],
                        accelerator: Any) -> dict[str, torch.Tensor]:
    """`args.token_weighting`'s ``[B, T]`` weights of chosen and rejected tokens, as PreferenceBatch fields.

    Computed from the policy's per-token log-probs (and entropy) of each side; the batch applies the same weights
    to the reference log-probs. Logs `token_weight/mean_chosen` and `token_weight/mean_rejected` (mean weight
    over completion tokens). Under a token weighting the logged `rewards/*` and `logps/*` are computed from the
    weighted sums the loss sees, so they are not comparable with an unweighted run's.
    """
    entropy = step.aligned(step.outputs.entropy) if step.outputs.entropy is not None else None
    mask = step.mask
    weights = compute_token_weights(name, step.policy_logps, mask, entropy=entropy, **hparams)
    fields = {}
    for side, side_weights, side_mask in zip(("chosen", "rejected"), weights.chunk(2, dim=0), mask.chunk(2, dim=0)):
        fields[f"{side}_token_weight"] = side_weights
        step.metrics[f"token_weight/mean_{side}"].append(
            gather_ratio(accelerator, (side_weights * side_mask).sum(), side_mask.sum())
        )
    return fields


Provider = Callable[[StepForward], dict[str, Any]]


class PreferenceBatchBuilder:
    """Builds a step's `PreferenceBatch`: the policy's and the reference's per-token log-probs and masks, plus the
    extras the selected losses (and options) need, each from its provider.

    ``providers`` maps each kind of extra to the function that provides its fields, or None when nothing selected
    needs it: ``columns`` (per-example dataset columns, the loss registry's list), ``model_outputs`` (fused-LM-head
    outputs), ``turn_ids`` (assistant-turn annotations), ``token_weights`` (`args.token_weighting`),
    ``reference_outputs`` (quantities from the reference's full outputs: ``token_kl``, SparsePO masks). Providers
    run in that order (the ones that log append their metrics in it).
    """

    KINDS = ("columns", "model_outputs", "turn_ids", "token_weights", "reference_outputs")

    def __init__(self, providers: dict[str, Provider | None]):
        unknown = set(providers) - set(self.KINDS)
        if unknown:
            raise ValueError(f"Unknown PreferenceBatch extra kinds {sorted(unknown)}; known: {self.KINDS}.")
        self.providers = [providers[kind] for kind in self.KINDS if providers.get(kind) is not None]

    @classmethod
    def for_losses(cls, *, model_outputs: tuple[str, ...] = (), turn_markers: AssistantTurnMarkers | None = None,
                   token_weighting: str | None = None, token_weighting_kwargs: dict[str, Any] | None = None,
                   reference_outputs: Provider | None = None, accelerator: Any = None) -> PreferenceBatchBuilder:
        """The builder for what the selected losses require (`PreferenceLossSpec.requires_*`) and the options."""
        return cls({
            "columns": column_fields,
            "model_outputs": partial(fused_output_fields, names=model_outputs) if model_outputs else None,
            "turn_ids": partial(turn_id_fields, markers=turn_markers) if turn_markers is not None else None,
            "token_weights": partial(token_weight_fields, name=token_weighting, hparams=token_weighting_kwargs or {},
                                     accelerator=accelerator) if token_weighting is not None else None,
            "reference_outputs": reference_outputs,
        })

    def build(self, step: StepForward) -> PreferenceBatch:
        policy_logps = step.policy_logps
        chosen_logps, rejected_logps = policy_logps.chunk(2, dim=0)  # the collator stacks [chosen; rejected]
        ref_chosen_logps = ref_rejected_logps = None
        if step.ref_logps is not None:
            ref_chosen_logps, ref_rejected_logps = step.aligned(step.ref_logps).chunk(2, dim=0)
        chosen_mask, rejected_mask = step.mask.chunk(2, dim=0)
        fields: dict[str, Any] = {}
        for provide in self.providers:
            fields.update(provide(step))
        return PreferenceBatch(
            chosen_logps=chosen_logps, rejected_logps=rejected_logps, ref_chosen_logps=ref_chosen_logps,
            ref_rejected_logps=ref_rejected_logps, chosen_mask=chosen_mask, rejected_mask=rejected_mask, **fields,
        )
