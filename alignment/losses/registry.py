"""Registry of preference losses: pure functions on a `PreferenceBatch`, selected by name.

A loss is registered with a decorator and has the signature::

    @register_preference_loss("name", requires=("margin",))
    def my_loss(batch: PreferenceBatch, *, beta: float = 0.1, ...) -> tuple[Tensor, dict[str, Tensor]]:
        ...  # returns the per-example loss [B] and method-specific metrics

Every keyword-only parameter with a default is a hyper-parameter, settable from a recipe. The registry (a kernel
`alignment.registry.Registry`, `PREFERENCE_LOSSES`) checks names before any forward pass (unknown loss, unknown
hyper-parameter, missing extra column) so that bad configuration fails before training starts, with the valid choices
in the message. A new loss is one file in this package plus its import line in ``__init__.py``.

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
model's hidden states or activations). `EXTRAS` is the one table of these names: what kind each is and which
`PreferenceBatch` fields it fills; `preference_columns()` lists the per-example dataset columns a loss may read (the
columns a trainer keeps in its batches), read from the table at each call.

A new per-example column is one line beside the loss that reads it; it reaches the loss as ``batch.columns[name]``
(the built-in columns keep their dedicated `PreferenceBatch` fields)::

    register_preference_column("my_score", source="Add it with scripts/annotate_x.py")

    @register_preference_loss("my_loss", requires=("my_score",))
    def my_loss(batch, *, beta: float = 0.1): ...  # batch.columns["my_score"]: [B]
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..registry import Registry, Spec
# re-exported: the loss files import their value checks from here
from ..registry import require_in_range, require_positive  # noqa: F401
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


# ------------------------------------------------------------------------------ per-example extras
# The kinds of extra a loss may require, by who provides it.
REFERENCE_OUTPUT = "reference output"  # computed by the trainer from the reference model's full outputs
ANNOTATION = "annotation"  # per-token, derived by the trainer from the token ids
COLUMN = "column"  # per-example dataset column
MODEL_OUTPUT = "model output"  # per-token, requested by the trainer from TRL's fused LM head


@dataclass(frozen=True)
class Extra:
    """One extra a loss may require: its kind and the `PreferenceBatch` fields that carry it.

    A column with no fields (declared by `register_preference_column`) is carried in ``PreferenceBatch.columns``
    under its own name.
    """

    kind: str
    fields: tuple[str, ...]
    # For a dataset column: how to produce it, appended to the error for a dataset without it ("" -> generic advice).
    source: str = ""


_ROUND_LOGPS_SOURCE = ("Generate the pairs with `record_policy_logps: true` (scripts/generate_pairs.py, or the "
                       "`generate` section of an `alignment-iterate` recipe): it writes each response's log-prob under "
                       "the sampling policy.")

EXTRAS: dict[str, Extra] = {
    # per-example dataset columns -> the PreferenceBatch field of that name
    "margin": Extra(COLUMN, ("margin",)),
    "weight": Extra(COLUMN, ("weight",)),
    "domain": Extra(COLUMN, ("domain",)),
    "empty_trace": Extra(COLUMN, ("empty_trace",)),
    "preference_prob": Extra(COLUMN, ("preference_prob",)),
    # log π_t(y) of each response under the policy that sampled the pair (INPO's round policy), sequence sums
    "round_chosen_logps": Extra(COLUMN, ("round_chosen_logps",), source=_ROUND_LOGPS_SOURCE),
    "round_rejected_logps": Extra(COLUMN, ("round_rejected_logps",), source=_ROUND_LOGPS_SOURCE),
    # per-token model outputs
    "log_sum_sq_probs": Extra(MODEL_OUTPUT, ("chosen_log_sum_sq_probs", "rejected_log_sum_sq_probs")),
    # per-token annotations derived from the token ids
    "turn_ids": Extra(ANNOTATION, ("chosen_turn_ids", "rejected_turn_ids")),
    # per-token quantities computed from the reference model's full outputs
    "token_kl": Extra(REFERENCE_OUTPUT, ("chosen_token_kl", "rejected_token_kl")),
    "sparse_masks": Extra(REFERENCE_OUTPUT, ("chosen_reward_mask", "rejected_reward_mask", "chosen_kl_mask",
                                             "rejected_kl_mask")),
}


def _extras_of(kind: str) -> dict[str, tuple[str, ...]]:
    return {name: extra.fields for name, extra in EXTRAS.items() if extra.kind == kind}


# The built-in extras of each kind, as the package defines them (snapshots taken at import: what reads the live list,
# including columns registered later by a user's loss module, calls `preference_columns()` instead).
COLUMN_EXTRAS = tuple(_extras_of(COLUMN))
MODEL_OUTPUT_EXTRAS = _extras_of(MODEL_OUTPUT)
ANNOTATION_EXTRAS = _extras_of(ANNOTATION)
REFERENCE_EXTRAS = _extras_of(REFERENCE_OUTPUT)

# Names a registered column may not take: the pair's own dataset columns and the collated keys the model is called
# with (a column of that name would be filtered out of the model's inputs, or shadow them).
_RESERVED_COLUMNS = frozenset({"prompt", "chosen", "rejected", "forget", "messages", "images", "input_ids",
                               "attention_mask", "completion_mask"})


def preference_columns() -> tuple[str, ...]:
    """The per-example dataset columns any loss may read (``margin``, ``weight``, ..., then those declared with
    `register_preference_column`): the columns a trainer keeps in its batches beside the pair itself.

    Read from `EXTRAS` at each call, so that a column registered after the trainers were imported is kept too."""
    return tuple(_extras_of(COLUMN))


def register_preference_column(name: str, *, source: str = "") -> str:
    """Declare a per-example ``[B]`` dataset column ``name`` that losses may require (``requires=(name,)``).

    It has no dedicated `PreferenceBatch` field: the trainer keeps it in its batches, collates it as float32, never
    passes it to the model and hands it to losses as ``batch.columns[name]``. ``source`` says how to produce the
    column; it is quoted in the error for a dataset (or batch) without it. Returns ``name``.

    A name already in `EXTRAS`, a `PreferenceBatch` field or one of the pair's own columns is an error naming it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_preference_column: the name must be a non-empty string, got {name!r}.")
    if name in EXTRAS:
        raise ValueError(f"register_preference_column({name!r}): a {EXTRAS[name].kind} extra named {name!r} is "
                         f"already registered (PreferenceBatch fields {list(EXTRAS[name].fields)}).")
    if name in {f.name for f in dataclasses.fields(PreferenceBatch)}:
        raise ValueError(f"register_preference_column({name!r}): `PreferenceBatch.{name}` is already a field; "
                         "choose another column name.")
    if name in _RESERVED_COLUMNS:
        raise ValueError(f"register_preference_column({name!r}): `{name}` is one of the pair's own columns or model "
                         f"inputs {sorted(_RESERVED_COLUMNS)}; choose another column name.")
    EXTRAS[name] = Extra(COLUMN, (), source=source)
    return name


def unregister_preference_column(name: str) -> Extra:
    """Remove a column declared with `register_preference_column` (a test's throwaway column) and return its entry.
    Unregister the losses that require it first; the built-in columns cannot be removed."""
    extra = EXTRAS.get(name)
    if extra is None or extra.kind != COLUMN or extra.fields:
        raise ValueError(f"{name!r} is not a column declared with register_preference_column; declared: "
                         f"{[key for key, value in EXTRAS.items() if value.kind == COLUMN and not value.fields]}.")
    users = [spec.name for spec in PREFERENCE_LOSSES if name in spec.requires]
    if users:
        raise ValueError(f"Column {name!r} is required by the registered loss(es) {users}; unregister them first.")
    return EXTRAS.pop(name)


def _batch_has(batch: PreferenceBatch, extra: str) -> bool:
    fields = EXTRAS[extra].fields
    if not fields:  # a registered column: carried in `batch.columns`
        return extra in batch.columns
    return all(getattr(batch, name) is not None for name in fields)


# Kind -> the error for a batch without some of the extras of that kind a loss requires (``{extras}``: their names,
# ``{fields}``: their PreferenceBatch fields), in the order the kinds are reported.
_MISSING_MESSAGES: dict[str, str] = {
    REFERENCE_OUTPUT: (
        "loss_type {name!r} needs the per-token quantities {extras} (PreferenceBatch fields {fields}); the "
        "PreferenceTrainer computes them from the reference model's outputs, other callers must fill them in."
    ),
    ANNOTATION: (
        "loss_type {name!r} needs the per-token annotation(s) {extras} (PreferenceBatch fields {fields}); the "
        "PreferenceTrainer derives them from the token ids and the chat template, other callers must fill them in "
        "(e.g. with `alignment.losses.turns.completion_turn_ids`)."
    ),
    COLUMN: (
        "loss_type {name!r} needs the per-example column(s) {extras} in the dataset, but the batch has none. Add the "
        "column (e.g. with scripts/annotate_margins.py for `margin`) or choose another loss_type."
    ),
    MODEL_OUTPUT: (
        "loss_type {name!r} needs the per-token model output(s) {extras} (PreferenceBatch fields {fields}); the "
        "PreferenceTrainer requests them from the fused LM head automatically, other callers must fill them in."
    ),
}

# What validation puts in each field of an extra of each kind (a one-pair batch; per-token fields one token long).
_DUMMY_FIELD: dict[str, Callable[[], torch.Tensor]] = {
    COLUMN: lambda: torch.zeros(1),
    MODEL_OUTPUT: lambda: torch.zeros(1, 1) - 1.0,  # a log Σ p², which is <= 0
    ANNOTATION: lambda: torch.zeros(1, 1, dtype=torch.long),
    REFERENCE_OUTPUT: lambda: torch.ones(1, 1),
}


@dataclass(frozen=True)
class PreferenceLossSpec(Spec):
    """What the registry knows about one loss: the kernel's `Spec` plus the loss family's declared properties."""

    requires: tuple[str, ...] = ()  # names in `EXTRAS` the loss cannot work without
    # Completion sides the loss reads. A loss that reads only `rejected` (NPO's forget response) can train on rows
    # that have no chosen response; the trainer fills that side with a copy, which gets zero gradient.
    sides: tuple[str, ...] = ("chosen", "rejected")
    # Reads no reference log-probs (SimPO, CPO, ORPO, SFT): when every selected loss is, the trainer neither builds nor
    # runs a reference model and the batch's `ref_*_logps` are None.
    reference_free: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.requires) - set(EXTRAS)
        if unknown:
            raise ValueError(f"register_preference_loss({self.name!r}): unknown extras {sorted(unknown)}; "
                             f"valid: {tuple(EXTRAS)}")
        if not self.sides or set(self.sides) - {"chosen", "rejected"}:
            raise ValueError(f"register_preference_loss({self.name!r}): `sides` must be a non-empty subset of "
                             f"('chosen', 'rejected'), got {self.sides!r}.")
        # A `state` with a default, or a positional one, would make a stateful loss silently run without the
        # trainer's state (a fresh one at every step) or take it as a hyper-parameter.
        state = inspect.signature(self.fn).parameters.get("state")
        if state is not None and (state.kind is not inspect.Parameter.KEYWORD_ONLY
                                  or state.default is not inspect.Parameter.empty):
            raise ValueError(f"register_preference_loss({self.name!r}): `state` must be keyword-only without a "
                             "default.")

    @property
    def stateful(self) -> bool:
        """Takes a `state: LossState` argument (see `LossState`)."""
        return "state" in self.inputs

    def _requires_of(self, kind: str) -> tuple[str, ...]:
        return tuple(extra for extra in self.requires if EXTRAS[extra].kind == kind)

    @property
    def requires_columns(self) -> tuple[str, ...]:
        """The per-example dataset columns among `requires`."""
        return self._requires_of(COLUMN)

    @property
    def requires_model_outputs(self) -> tuple[str, ...]:
        """The per-token model outputs among `requires` (names of TRL fused-LM-head outputs)."""
        return self._requires_of(MODEL_OUTPUT)

    @property
    def requires_token_annotations(self) -> tuple[str, ...]:
        """The per-token annotations among `requires` (derived by the trainer from the token ids)."""
        return self._requires_of(ANNOTATION)

    @property
    def requires_reference_outputs(self) -> tuple[str, ...]:
        """The per-token quantities among `requires` that the trainer derives from the reference model's full
        outputs (vocabulary distribution, hidden states): ``token_kl``, ``sparse_masks``."""
        return self._requires_of(REFERENCE_OUTPUT)


def _dummy_call(spec: PreferenceLossSpec, hparams: dict[str, Any]) -> None:
    """Evaluate the loss on a one-pair batch carrying every extra it requires.

    The loss functions validate their own values (e.g. ``beta > 0``); running them once on dummy inputs surfaces
    those errors at start-up instead of at the first training step.
    """
    zeros = torch.zeros(1)
    extras: dict[str, Any] = {field_name: _DUMMY_FIELD[EXTRAS[extra].kind]() for extra in spec.requires
                              for field_name in EXTRAS[extra].fields}
    columns = {extra: _DUMMY_FIELD[COLUMN]() for extra in spec.requires if not EXTRAS[extra].fields}
    dummy = PreferenceBatch.from_sequence_logps(zeros - 1.0, zeros - 2.0, zeros - 1.5, zeros - 1.5, columns=columns,
                                                **extras)
    if spec.stateful:
        hparams = {**hparams, "state": fresh_loss_state()}  # a throw-away state: validation must not touch a real one
    spec.fn(dummy, **hparams)


PREFERENCE_LOSSES: Registry[PreferenceLossSpec] = Registry("preference loss_type", PreferenceLossSpec,
                                                           inputs=("state",), validator=_dummy_call)


def register_preference_loss(
    name: str, *, requires: tuple[str, ...] = (), sides: tuple[str, ...] = ("chosen", "rejected"),
    reference_free: bool = False,
) -> Callable[[LossFn], LossFn]:
    """Register ``fn`` under ``name``. Hyper-parameters are its keyword-only arguments with defaults.

    ``sides``: the completions the loss reads; ``("rejected",)`` lets it train on rows without a chosen response.
    ``reference_free``: the loss never reads ``ref_*_logps`` (it must work on a batch where they are None).
    """
    return PREFERENCE_LOSSES.register(name, requires=tuple(requires), sides=tuple(sides),
                                      reference_free=bool(reference_free))


def list_preference_losses() -> list[str]:
    return PREFERENCE_LOSSES.names()


def get_preference_loss(name: str) -> PreferenceLossSpec:
    return PREFERENCE_LOSSES.get(name)


def check_hparams(name: str, hparams: dict[str, Any]) -> PreferenceLossSpec:
    """Fail on hyper-parameters the loss does not take (a typo would otherwise be silently ignored)."""
    return PREFERENCE_LOSSES.check_hparams(name, hparams)


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
    spec = check_hparams(name, hparams)
    if state is not None and not spec.stateful:
        raise ValueError(f"loss_type {name!r} is stateless; do not pass `state=`.")
    missing = [extra for extra in spec.requires if not _batch_has(batch, extra)]
    if batch.ref_chosen_logps is None and not spec.reference_free:
        raise ValueError(f"loss_type {name!r} reads reference log-probs but the batch has none (`ref_chosen_logps` is "
                         "None); only reference-free losses (e.g. simpo, cpo, orpo) accept such a batch.")
    for kind, message in _MISSING_MESSAGES.items():  # the first kind with a missing extra is reported
        extras = [extra for extra in missing if EXTRAS[extra].kind == kind]
        if extras:
            fields = [f for extra in extras for f in EXTRAS[extra].fields or (f"columns[{extra!r}]",)]
            sources = [EXTRAS[extra].source for extra in extras if EXTRAS[extra].source]
            raise ValueError(" ".join([message.format(name=name, extras=extras, fields=fields), *sources]))
    if spec.stateful:
        hparams = {**hparams, "state": state if state is not None else fresh_loss_state()}
    losses, metrics = spec.fn(batch, **hparams)
    if losses.shape != (batch.batch_size,):
        raise RuntimeError(f"loss {name!r} returned shape {tuple(losses.shape)}, expected [{batch.batch_size}]")
    if batch.weight is not None:
        losses = losses * batch.weight.to(losses.dtype)
    return losses, {key: value.detach() for key, value in metrics.items()}


def validate_preference_loss(name: str, **hparams: Any) -> None:
    """Check a loss name and its hyper-parameters before training, by evaluating the loss on a one-pair batch
    (`_dummy_call`, the registry's validator)."""
    PREFERENCE_LOSSES.validate(name, **hparams)

