"""Registry of preference losses: pure functions on a `PreferenceBatch`, selected by name.

A loss is registered with a decorator and has the signature::

    @register_preference_loss("name", requires=("margin",))
    def my_loss(batch: PreferenceBatch, *, beta: float = 0.1, ...) -> tuple[Tensor, dict[str, Tensor]]:
        ...  # returns the per-example loss [B] and method-specific metrics

Every keyword-only parameter with a default is a hyper-parameter, settable from a recipe. The registry checks names
before any forward pass (unknown loss, unknown hyper-parameter, missing extra column) so that bad configuration fails
before training starts, with the valid choices in the message.

Stateful losses (running statistics across steps, e.g. β-DPO's EMA of the margin) declare a keyword-only parameter
``state`` *without* a default::

    @register_preference_loss("name")
    def my_loss(batch, *, state: LossState, beta: float = 0.1): ...

They receive a `LossState` (buffers, a cross-rank ``gather``, a ``training`` flag and an optional RNG) that the caller
keeps between steps; the trainer owns one per stateful loss and saves it in every checkpoint.

``requires`` names what the loss cannot work without: per-example dataset columns (``margin``, ``weight``,
``domain``) or per-token model outputs (``log_sum_sq_probs``: ``log Σ_v π_θ(v)²`` at each completion token, which the
trainer then requests from TRL's fused LM head), or per-token annotations the trainer derives from the token ids
(``turn_ids``: the assistant-turn index of each completion token, see `alignment.losses.turns`), or per-token
quantities the trainer computes from the reference model's full outputs (``token_kl``: the exact per-token
KL(π_ref‖π_θ) over the vocabulary; ``sparse_masks``: SparsePO's reward and divergence masks, from the reference
model's hidden states or activations).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..registry_utils import describe_hparams, lookup, reject_unknown
from .batch import PreferenceBatch

LossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass
class LossState:
    """State a stateful loss keeps between calls.

    Attributes:
        buffers: named tensors the loss reads and updates in place (running statistics). The loss creates them on
            first use; they are saved in checkpoints by `state_dict()`.
        gather: concatenates a tensor across ranks (the trainer sets ``accelerator.gather``) so that statistics are
            global; the default, the identity, is right for a single process.
        training: running statistics are updated only when True (the trainer sets it from ``model.training``).
        generator: RNG for any sampling the loss does (``None``: torch's global RNG). Its state is checkpointed too,
            so a resumed run draws the same samples as an uninterrupted one.
    """

    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    gather: Callable[[torch.Tensor], torch.Tensor] = _identity
    training: bool = True
    generator: torch.Generator | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "buffers": {key: value.detach().cpu().clone() for key, value in self.buffers.items()},
            "generator": None if self.generator is None else self.generator.get_state(),
        }

    def scalar_buffers(self, names: tuple[str, ...], device: torch.device) -> dict[str, torch.Tensor]:
        """`buffers`, with each of ``names`` a scalar on ``device``: created as 0 on first use, moved there when a
        checkpoint restored it elsewhere."""
        for key in names:
            if key not in self.buffers:
                self.buffers[key] = torch.zeros((), device=device)
            elif self.buffers[key].device != device:
                self.buffers[key] = self.buffers[key].to(device)
        return self.buffers

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore buffers (each on the device of the buffer it replaces, if any) and the generator state."""
        buffers = {}
        for key, value in state_dict["buffers"].items():
            device = self.buffers[key].device if key in self.buffers else value.device
            buffers[key] = value.detach().clone().to(device)
        self.buffers = buffers
        if state_dict.get("generator") is not None:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(state_dict["generator"])


def fresh_loss_state(seed: int = 0) -> LossState:
    """A new `LossState` with a seeded generator: what a stateful loss sees when called without a state."""
    return LossState(generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class PreferenceLossSpec:
    """What the registry knows about one loss."""

    name: str
    fn: LossFn
    hparams: dict[str, Any] = field(default_factory=dict)  # name -> default
    requires: tuple[str, ...] = ()  # PreferenceBatch extras the loss cannot work without
    stateful: bool = False  # takes a `state: LossState` argument (see `LossState`)
    # Completion sides the loss reads. A loss that reads only `rejected` (NPO's forget response) can train on rows
    # that have no chosen response; the trainer fills that side with a copy, which gets zero gradient.
    sides: tuple[str, ...] = ("chosen", "rejected")
    # Reads no reference log-probs (SimPO, CPO, ORPO, SFT): when every selected loss is, the trainer neither builds nor
    # runs a reference model and the batch's `ref_*_logps` are None.
    reference_free: bool = False

    @property
    def requires_columns(self) -> tuple[str, ...]:
        """The per-example dataset columns among `requires`."""
        return tuple(extra for extra in self.requires if extra in _COLUMN_EXTRAS)

    @property
    def requires_model_outputs(self) -> tuple[str, ...]:
        """The per-token model outputs among `requires` (names of TRL fused-LM-head outputs)."""
        return tuple(extra for extra in self.requires if extra in _TOKEN_EXTRAS)

    @property
    def requires_token_annotations(self) -> tuple[str, ...]:
        """The per-token annotations among `requires` (derived by the trainer from the token ids)."""
        return tuple(extra for extra in self.requires if extra in _ANNOTATION_EXTRAS)

    @property
    def requires_reference_outputs(self) -> tuple[str, ...]:
        """The per-token quantities among `requires` that the trainer derives from the reference model's full
        outputs (vocabulary distribution, hidden states): ``token_kl``, ``sparse_masks``."""
        return tuple(extra for extra in self.requires if extra in _REFERENCE_EXTRAS)

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""


_PREFERENCE_LOSSES: dict[str, PreferenceLossSpec] = {}
# per-example dataset columns -> PreferenceBatch field of that name
_COLUMN_EXTRAS = ("margin", "weight", "domain", "empty_trace", "preference_prob")
# per-token model outputs -> the two PreferenceBatch fields that carry them
_TOKEN_EXTRAS = {"log_sum_sq_probs": ("chosen_log_sum_sq_probs", "rejected_log_sum_sq_probs")}
# per-token annotations derived from the token ids -> the two PreferenceBatch fields that carry them
_ANNOTATION_EXTRAS = {"turn_ids": ("chosen_turn_ids", "rejected_turn_ids")}
# per-token quantities computed from the reference model's full outputs -> the PreferenceBatch fields that carry them
_REFERENCE_EXTRAS = {
    "token_kl": ("chosen_token_kl", "rejected_token_kl"),
    "sparse_masks": ("chosen_reward_mask", "rejected_reward_mask", "chosen_kl_mask", "rejected_kl_mask"),
}
_EXTRAS = (*_COLUMN_EXTRAS, *_TOKEN_EXTRAS, *_ANNOTATION_EXTRAS, *_REFERENCE_EXTRAS)


def _batch_has(batch: PreferenceBatch, extra: str) -> bool:
    fields = _TOKEN_EXTRAS.get(extra) or _ANNOTATION_EXTRAS.get(extra) or _REFERENCE_EXTRAS.get(extra, (extra,))
    return all(getattr(batch, name) is not None for name in fields)


def register_preference_loss(
    name: str, *, requires: tuple[str, ...] = (), sides: tuple[str, ...] = ("chosen", "rejected"),
    reference_free: bool = False,
) -> Callable[[LossFn], LossFn]:
    """Register ``fn`` under ``name``. Hyper-parameters are its keyword-only arguments with defaults.

    ``sides``: the completions the loss reads; ``("rejected",)`` lets it train on rows without a chosen response.
    ``reference_free``: the loss never reads ``ref_*_logps`` (it must work on a batch where they are None).
    """
    unknown = set(requires) - set(_EXTRAS)
    if unknown:
        raise ValueError(f"register_preference_loss({name!r}): unknown extras {sorted(unknown)}; valid: {_EXTRAS}")
    if not sides or set(sides) - {"chosen", "rejected"}:
        raise ValueError(f"register_preference_loss({name!r}): `sides` must be a non-empty subset of "
                         f"('chosen', 'rejected'), got {sides!r}.")

    def decorator(fn: LossFn) -> LossFn:
        if name in _PREFERENCE_LOSSES:
            raise ValueError(f"A preference loss named {name!r} is already registered.")
        params = inspect.signature(fn).parameters
        hparams = {
            p.name: p.default
            for p in params.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
        }
        state = params.get("state")
        if state is not None and (state.kind is not inspect.Parameter.KEYWORD_ONLY
                                  or state.default is not inspect.Parameter.empty):
            raise ValueError(f"register_preference_loss({name!r}): `state` must be keyword-only without a default.")
        _PREFERENCE_LOSSES[name] = PreferenceLossSpec(
            name=name, fn=fn, hparams=hparams, requires=tuple(requires), stateful=state is not None,
            sides=tuple(sides), reference_free=bool(reference_free),
        )
        return fn

    return decorator


def list_preference_losses() -> list[str]:
    return sorted(_PREFERENCE_LOSSES)


def get_preference_loss(name: str) -> PreferenceLossSpec:
    return lookup(_PREFERENCE_LOSSES, name, "preference loss_type")


def check_hparams(name: str, hparams: dict[str, Any]) -> None:
    """Fail on hyper-parameters the loss does not take (a typo would otherwise be silently ignored)."""
    spec = get_preference_loss(name)
    reject_unknown(hparams, spec.hparams, f"loss_type {name!r}",
                   f"Its hyper-parameters: {describe_hparams(spec.hparams)}")


def compute_preference_loss(
    name: str, batch: PreferenceBatch, *, state: LossState | None = None, **hparams: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Compute the registered loss ``name`` on ``batch``.

    Returns ``(per_example_loss, metrics)``: the loss has shape ``[B]``; metrics are detached tensors of shape ``[B]``
    (averaged by the caller) or scalars. If ``batch.weight`` is set, the per-example loss is multiplied by it here, so
    every registered loss composes with per-example weights through this one mechanism.

    ``state`` is for stateful losses (`PreferenceLossSpec.stateful`): pass the same `LossState` at every step. If it is
    ``None`` a fresh one is used (`fresh_loss_state()`: generator seeded with 0, so the call is deterministic), i.e.
    the call behaves as the first step of a run and its updates are lost.
    Passing a ``state`` to a stateless loss is an error (it would be silently ignored otherwise).
    """
    spec = get_preference_loss(name)
    check_hparams(name, hparams)
    if state is not None and not spec.stateful:
        raise ValueError(f"loss_type {name!r} is stateless; do not pass `state=`.")
    missing = [extra for extra in spec.requires if not _batch_has(batch, extra)]
    if batch.ref_chosen_logps is None and not spec.reference_free:
        raise ValueError(f"loss_type {name!r} reads reference log-probs but the batch has none (`ref_chosen_logps` is "
                         "None); only reference-free losses (e.g. simpo, cpo, orpo) accept such a batch.")
    if missing:
        columns = [extra for extra in missing if extra in _COLUMN_EXTRAS]
        outputs = [extra for extra in missing if extra in _TOKEN_EXTRAS]
        annotations = [extra for extra in missing if extra in _ANNOTATION_EXTRAS]
        reference = [extra for extra in missing if extra in _REFERENCE_EXTRAS]
        if reference:
            raise ValueError(
                f"loss_type {name!r} needs the per-token quantities {reference} (PreferenceBatch fields "
                f"{[f for extra in reference for f in _REFERENCE_EXTRAS[extra]]}); the PreferenceTrainer computes "
                "them from the reference model's outputs, other callers must fill them in."
            )
        if annotations:
            raise ValueError(
                f"loss_type {name!r} needs the per-token annotation(s) {annotations} (PreferenceBatch fields "
                f"{[f for extra in annotations for f in _ANNOTATION_EXTRAS[extra]]}); the PreferenceTrainer derives "
                "them from the token ids and the chat template, other callers must fill them in (e.g. with "
                "`alignment.losses.turns.completion_turn_ids`)."
            )
        if columns:
            raise ValueError(
                f"loss_type {name!r} needs the per-example column(s) {columns} in the dataset, but the batch has none. "
                f"Add the column (e.g. with scripts/annotate_margins.py for `margin`) or choose another loss_type."
            )
        raise ValueError(
            f"loss_type {name!r} needs the per-token model output(s) {outputs} (PreferenceBatch fields "
            f"{[f for extra in outputs for f in _TOKEN_EXTRAS[extra]]}); the PreferenceTrainer requests them from "
            "the fused LM head automatically, other callers must fill them in."
        )
    if spec.stateful:
        hparams = {**hparams, "state": state if state is not None else fresh_loss_state()}
    losses, metrics = spec.fn(batch, **hparams)
    if losses.shape != (batch.batch_size,):
        raise RuntimeError(f"loss {name!r} returned shape {tuple(losses.shape)}, expected [{batch.batch_size}]")
    if batch.weight is not None:
        losses = losses * batch.weight.to(losses.dtype)
    return losses, {key: value.detach() for key, value in metrics.items()}


def validate_preference_loss(name: str, **hparams: Any) -> None:
    """Check a loss name and its hyper-parameters before training, by evaluating the loss on a one-pair batch.

    The loss functions validate their own values (e.g. ``beta > 0``); running them once on dummy inputs surfaces
    those errors at start-up instead of at the first training step.
    """
    spec = get_preference_loss(name)
    check_hparams(name, hparams)
    zeros = torch.zeros(1)
    extras = {extra: torch.zeros(1) for extra in spec.requires_columns}
    for extra in spec.requires_model_outputs:
        extras.update({field_name: torch.zeros(1, 1) - 1.0 for field_name in _TOKEN_EXTRAS[extra]})
    for extra in spec.requires_token_annotations:
        extras.update({field_name: torch.zeros(1, 1, dtype=torch.long) for field_name in _ANNOTATION_EXTRAS[extra]})
    for extra in spec.requires_reference_outputs:
        extras.update({field_name: torch.ones(1, 1) for field_name in _REFERENCE_EXTRAS[extra]})
    dummy = PreferenceBatch.from_sequence_logps(zeros - 1.0, zeros - 2.0, zeros - 1.5, zeros - 1.5, **extras)
    if spec.stateful:
        hparams = {**hparams, "state": fresh_loss_state()}  # a throw-away state: validation must not touch a real one
    spec.fn(dummy, **hparams)


def require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"`{name}` must be > 0, got {value}.")


def require_in_range(name: str, value: float, low: float, high: float, *, high_inclusive: bool = False) -> None:
    ok = low <= value <= high if high_inclusive else low <= value < high
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"`{name}` must be in [{low}, {high}{bracket}, got {value}.")
