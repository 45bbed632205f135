"""Reward functions for group-relative RL, selected by name, and multi-objective reward weighting.

Reward functions have the signature TRL's ``GRPOTrainer`` calls them with, ``fn(prompts, completions, **kwargs) ->
list[float]`` (``kwargs``: the dataset's other columns, ``completion_ids``, ``trainer_state``, ...). They are
registered by name so that a recipe can list them::

    reward_funcs: [accuracy_reward, format_reward, overlong_penalty]
    reward_kwargs: {overlong_penalty: {max_length: 256, cache_length: 64}}

A registered function takes the completions, then the dataset columns it reads as ordinary parameters (``answer``),
then its hyper-parameters as keyword-only parameters; a keyword-only parameter without a default is a hyper-parameter
the recipe must set. `get_reward_function(name, **hparams)` checks them and returns a picklable callable whose
``__name__`` is ``name`` (TRL logs each reward under its function's ``__name__``).

Several rewards are scalarised into one with weights (`scalarize_rewards`). Besides fixed weights
(`FixedRewardWeighting`), two dynamic schemes of Lu et al. (arXiv 2509.11452) are here, as pure functions plus small
stateful objects with ``state_dict``/``load_state_dict`` for checkpoints and ``weights`` for logging:

* (a) hypervolume-guided: a meta-reward ``m = 0.5 + 1.5·tanh(max(ΔHV, 0))`` from the hypervolume contribution of
  the latest validation scores multiplies the weighted reward (`HypervolumeRewardWeighting`);
* (b) gradient-based: ``w ← softmax(log w + η·s/λ)`` with ``s_k = Σ_j ⟨g_k, g_j⟩`` the influence of objective ``k``'s
  policy gradient (`GradientRewardWeighting`).
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..registry_utils import lookup, reject_unknown
from ..data.answers import _NUMBER, _after_last_marker, _completion_text, _last_boxed, _strip_special_tokens
from ..data.answers import accuracy_reward as _accuracy_reward

RewardFn = Callable[..., list[float]]

# --------------------------------------------------------------------------------------------------------- registry

_REQUIRED = inspect.Parameter.empty  # marks a hyper-parameter without a default (the recipe must set it)
# What TRL's GRPOTrainer passes besides the dataset's columns.
_TRL_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric",
                  "environments")


@dataclass(frozen=True)
class RewardSpec:
    """What the registry knows about one reward function."""

    name: str
    fn: RewardFn
    hparams: dict[str, Any] = field(default_factory=dict)  # name -> default (`inspect.Parameter.empty`: required)
    columns: tuple[str, ...] = ()  # dataset columns the function reads (e.g. ``answer``)

    @property
    def required_hparams(self) -> tuple[str, ...]:
        return tuple(name for name, default in self.hparams.items() if default is _REQUIRED)

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""


_REWARDS: dict[str, RewardSpec] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Register ``fn(completions, <columns>..., *, <hparams>, **kwargs)`` under ``name``."""

    def decorator(fn: RewardFn) -> RewardFn:
        if name in _REWARDS:
            raise ValueError(f"A reward function named {name!r} is already registered.")
        params = inspect.signature(fn).parameters
        if "completions" not in params or inspect.Parameter.VAR_KEYWORD not in {p.kind for p in params.values()}:
            raise ValueError(f"register_reward({name!r}): the function must take `completions` and `**kwargs`.")
        hparams = {p.name: p.default for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        columns = tuple(p.name for p in params.values()
                        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name not in _TRL_ARGUMENTS)
        _REWARDS[name] = RewardSpec(name=name, fn=fn, hparams=hparams, columns=columns)
        return fn

    return decorator


def list_rewards() -> list[str]:
    return sorted(_REWARDS)


def get_reward_spec(name: str) -> RewardSpec:
    return lookup(_REWARDS, name, "reward function")


class RewardFunction:
    """A registered reward bound to its hyper-parameters: TRL-callable, picklable, named after the registry entry."""

    def __init__(self, spec: RewardSpec, hparams: dict[str, Any]):
        self.spec = spec
        self.hparams = dict(hparams)
        self.__name__ = spec.name

    def __call__(self, prompts=None, completions=None, **kwargs: Any) -> list[float]:
        if completions is None:
            raise ValueError(f"reward {self.__name__!r} was called without `completions`.")
        return self.spec.fn(completions=completions, **{**kwargs, **self.hparams})

    def __repr__(self) -> str:
        return f"RewardFunction({self.__name__!r}, {self.hparams})"

    def __reduce__(self):  # pickled by name and hyper-parameters (TRL's async rollout worker pickles rewards)
        return _rebuild, (self.spec.name, self.hparams)


def _rebuild(name: str, hparams: dict[str, Any]) -> RewardFunction:
    return get_reward_function(name, **hparams)


def get_reward_function(name: str, **hparams: Any) -> RewardFunction:
    """The registered reward ``name`` with ``hparams`` set, checked now (names, required values, ranges)."""
    spec = get_reward_spec(name)
    accepted = ", ".join(f"{k}={'<required>' if v is _REQUIRED else repr(v)}" for k, v in spec.hparams.items())
    reject_unknown(hparams, spec.hparams, f"reward {name!r}", f"Its hyper-parameters: {accepted or 'none'}")
    missing = [key for key in spec.required_hparams if key not in hparams]
    if missing:
        raise ValueError(f"reward {name!r} needs {missing} in its reward_kwargs (e.g. `reward_kwargs: {{{name}: "
                         f"{{{', '.join(f'{key}: ...' for key in missing)}}}}}`).")
    reward = RewardFunction(spec, hparams)
    # One call on a dummy completion runs the function's own value checks before training starts.
    dummy_columns = {column: ["1"] for column in spec.columns}
    dummy_columns["completion_ids"] = [[1]]
    reward(prompts=["1"], completions=["1"], **dummy_columns)
    return reward


def validate_reward(name: str, **hparams: Any) -> None:
    """Check a reward name and its hyper-parameters (same checks as `get_reward_function`)."""
    get_reward_function(name, **hparams)


# --------------------------------------------------------------------------------------------------------- rewards


@register_reward("accuracy_reward")
def accuracy(completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion's final answer equals the ``answer`` column, else 0.0 (`alignment.data.answers`)."""
    return _accuracy_reward(completions, answer)


# "Just the final answer" as the task suite asks for it: one number or one word, optionally ending with a period.
_BARE_ANSWER_RE = re.compile(rf"(?:{_NUMBER}|[^\W\d_]+)\.?")
FORMAT_STYLES = ("bare", "boxed", "marker")


def has_final_answer_form(text: str, style: str = "bare") -> bool:
    """Whether ``text`` gives its answer in the expected final form.

    ``"bare"``: the whole reply is the answer, one number or one word (the task suite asks "Reply with just the final
    answer."); ``"boxed"``: it has a non-empty ``\\boxed{...}``; ``"marker"``: it states "the answer is X",
    "Answer: X" or "#### X". Chat control tokens and surrounding whitespace are ignored.
    """
    if style not in FORMAT_STYLES:
        raise ValueError(f"`style` must be one of {list(FORMAT_STYLES)}, got {style!r}.")
    text = _strip_special_tokens(text or "").strip()
    if style == "bare":
        return _BARE_ANSWER_RE.fullmatch(text) is not None
    if style == "boxed":
        boxed = _last_boxed(text)
        return boxed is not None and boxed.strip() != ""
    return _after_last_marker(text) is not None


@register_reward("format_reward")
def format_reward(completions, *, style: str = "bare", **kwargs) -> list[float]:
    """1.0 for each completion whose answer is in the expected final form (`has_final_answer_form`), else 0.0.

    ``style`` (default ``"bare"``, what the task suite's prompts ask for): ``"bare"``, ``"boxed"`` or ``"marker"``.
    It rewards the form only, not correctness: combine it with ``accuracy_reward`` with a small weight.
    """
    if style not in FORMAT_STYLES:
        raise ValueError(f"format_reward: `style` must be one of {list(FORMAT_STYLES)}, got {style!r}.")
    return [1.0 if has_final_answer_form(_completion_text(c), style) else 0.0 for c in completions]


def soft_overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """DAPO's soft overlong punishment (Yu et al., arXiv 2503.14476, Eq. 13) for one completion of ``length`` tokens.

    ``0`` if ``|y| <= L_max − L_cache``; ``((L_max − L_cache) − |y|) / L_cache`` if ``L_max − L_cache < |y| <= L_max``
    (linear from 0 to −1); ``−1`` beyond ``L_max``. The paper uses ``L_max = 20480``, ``L_cache = 4096``;
    ``L_cache = 0`` is a hard −1 beyond ``L_max`` only.
    """
    if length <= max_length - cache_length:
        return 0.0
    if length <= max_length:
        return ((max_length - cache_length) - length) / cache_length
    return -1.0


@register_reward("overlong_penalty")
def overlong_penalty(completions, completion_ids=None, *, max_length: int, cache_length: int,
                     **kwargs) -> list[float]:
    """DAPO soft overlong punishment (arXiv 2503.14476) on each completion's token count (`soft_overlong_penalty`).

    ``max_length`` (``L_max``, usually the trainer's ``max_completion_length``) and ``cache_length`` (``L_cache``,
    the soft zone before it; 0 ≤ L_cache ≤ L_max; DAPO: 4096 of 20480) must be set in the recipe. Reads the
    ``completion_ids`` TRL passes to reward functions. Same values as TRL's ``get_soft_overlong_punishment``.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"overlong_penalty: `max_length` must be a positive int, got {max_length!r}.")
    if isinstance(cache_length, bool) or not isinstance(cache_length, int) or not 0 <= cache_length <= max_length:
        raise ValueError(f"overlong_penalty: `cache_length` must be an int in [0, max_length={max_length}], "
                         f"got {cache_length!r}.")
    if completion_ids is None:
        raise ValueError("overlong_penalty needs `completion_ids` (TRL's GRPOTrainer passes them to reward functions).")
    if len(completion_ids) != len(completions):
        raise ValueError(f"Got {len(completions)} completions but {len(completion_ids)} completion_ids.")
    return [soft_overlong_penalty(len(ids), max_length, cache_length) for ids in completion_ids]


# ------------------------------------------------------------------------------------------ multi-objective weights


def _as_weights(weights: Sequence[float] | torch.Tensor, *, name: str = "weights") -> torch.Tensor:
    weights = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if weights.numel() == 0 or not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"`{name}` must be a non-empty list of finite non-negative numbers, got {weights.tolist()}.")
    return weights


def scalarize_rewards(rewards: torch.Tensor, weights: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Linear scalarisation ``r = Σ_k w_k r_k``: rewards ``[N, K]`` (one column per objective), weights ``[K]`` → ``[N]``."""
    rewards = torch.as_tensor(rewards)
    weights = _as_weights(weights)
    if rewards.dim() != 2 or rewards.shape[1] != weights.numel():
        raise ValueError(f"rewards must be [N, K={weights.numel()}] (one column per weight), "
                         f"got {list(rewards.shape)}.")
    return rewards @ weights.to(rewards.dtype if rewards.is_floating_point() else torch.float64)


class FixedRewardWeighting:
    """Fixed weights for linear scalarisation; the same interface as the dynamic weightings."""

    def __init__(self, weights: Sequence[float], names: Sequence[str] | None = None):
        self.base_weights = _as_weights(weights)
        self.names = _objective_names(names, self.base_weights.numel())

    @property
    def weights(self) -> torch.Tensor:
        return self.base_weights.clone()

    def scalarize(self, rewards: torch.Tensor) -> torch.Tensor:
        return scalarize_rewards(rewards, self.weights)

    def log_dict(self) -> dict[str, float]:
        """``{"reward_weight/<objective>": weight}`` for the trainer's logs."""
        return {f"reward_weight/{name}": float(w) for name, w in zip(self.names, self.weights)}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


def _objective_names(names: Sequence[str] | None, count: int) -> list[str]:
    names = list(names) if names is not None else [f"objective_{k}" for k in range(count)]
    if len(names) != count:
        raise ValueError(f"Got {len(names)} objective names for {count} weights.")
    return names


# ---- (a) hypervolume-guided meta-reward


def _to_maximization(points: torch.Tensor, maximize: Sequence[bool]) -> torch.Tensor:
    signs = torch.tensor([1.0 if m else -1.0 for m in maximize], dtype=points.dtype)
    return points * signs


def hypervolume(points: torch.Tensor, reference: torch.Tensor, maximize: Sequence[bool] | None = None) -> float:
    """Hypervolume dominated by ``points`` ``[n, K]`` relative to ``reference`` ``[K]``.

    The Lebesgue measure of ``∪_p [ref, p]`` (each objective maximised, or minimised where ``maximize[k]`` is False).
    A point no better than the reference in some objective dominates nothing. Exact, by cutting space into the grid
    of all point coordinates: ``(n+1)^K`` cells, fine for the small Pareto buffers this is used with.
    """
    points = torch.as_tensor(points, dtype=torch.float64)
    reference = torch.as_tensor(reference, dtype=torch.float64).flatten()
    if points.numel() == 0:
        return 0.0
    points = points.reshape(-1, reference.numel())
    maximize = [True] * reference.numel() if maximize is None else list(maximize)
    if len(maximize) != reference.numel():
        raise ValueError(f"`maximize` has {len(maximize)} entries for {reference.numel()} objectives.")
    points = _to_maximization(points, maximize)
    reference = _to_maximization(reference.unsqueeze(0), maximize)[0]
    points = torch.maximum(points, reference)  # a worse coordinate adds no volume
    # Per objective, the sorted cut positions; a cell [c_i, c_{i+1}] is covered if some point reaches c_{i+1}.
    cuts = [torch.unique(torch.cat([reference[k:k + 1], points[:, k]])) for k in range(reference.numel())]
    uppers = torch.cartesian_prod(*(c[1:] for c in cuts)).reshape(-1, reference.numel())
    widths = torch.cartesian_prod(*(c[1:] - c[:-1] for c in cuts)).reshape(-1, reference.numel())
    covered = (points.unsqueeze(0) >= uppers.unsqueeze(1)).all(dim=2).any(dim=1)
    return float((widths.prod(dim=1) * covered).sum())


def hypervolume_contribution(buffer: Sequence[Sequence[float]], point: Sequence[float],
                             maximize: Sequence[bool] | None = None) -> float:
    """``ΔHV = HV(buffer[1:] ∪ {point}) − HV(buffer[1:])`` with ``buffer[0]`` the reference point (Lu et al.)."""
    if len(buffer) == 0:
        raise ValueError("`buffer` must hold at least the reference point (its first entry).")
    reference = torch.as_tensor(buffer[0], dtype=torch.float64)
    front = torch.as_tensor(list(buffer[1:]), dtype=torch.float64).reshape(-1, reference.numel())
    point = torch.as_tensor(point, dtype=torch.float64).reshape(1, -1)
    if point.shape[1] != reference.numel():
        raise ValueError(f"point has {point.shape[1]} objectives, the reference {reference.numel()}.")
    return hypervolume(torch.cat([front, point]), reference, maximize) - hypervolume(front, reference, maximize)


def hypervolume_meta_reward(contribution: float) -> float:
    """Lu et al. (arXiv 2509.11452): ``m = 0.5 + 1.5·tanh(max(ΔHV, 0))``, in ``[0.5, 2)``; multiplies the reward."""
    return 0.5 + 1.5 * math.tanh(max(contribution, 0.0))


class HypervolumeRewardWeighting:
    """Hypervolume-guided reward weighting (Lu et al., arXiv 2509.11452, method (a)).

    Keeps a buffer whose first entry is the reference point (the validation scores before training) and whose others
    are the validation score vectors that enlarged the Pareto front (without ``reference_point``, the first validation's
    scores become the reference). After each validation, `update(scores)` computes
    the contribution ``ΔHV`` of the new scores, sets the meta-reward ``m = 0.5 + 1.5·tanh(max(ΔHV, 0))`` and adds the
    scores to the buffer if ``ΔHV > 0``. Training rewards are then ``m · Σ_k w_k r_k`` (`scalarize`); `weights` is
    ``m · w``. Before the first update ``m = 1``, as in the official code.
    """

    def __init__(self, weights: Sequence[float], reference_point: Sequence[float] | None = None,
                 maximize: Sequence[bool] | None = None, names: Sequence[str] | None = None):
        self.base_weights = _as_weights(weights)
        count = self.base_weights.numel()
        self.names = _objective_names(names, count)
        self.maximize = [True] * count if maximize is None else [bool(m) for m in maximize]
        if len(self.maximize) != count:
            raise ValueError(f"`maximize` has {len(self.maximize)} entries for {count} objectives.")
        # Without a reference point, the first validation's scores become it (and leave m = 1).
        self.buffer: list[list[float]] = []
        if reference_point is not None:
            self.buffer.append(self._checked(reference_point, "reference_point"))
        self.meta_reward = 1.0
        self.last_contribution = 0.0

    def _checked(self, values: Sequence[float], name: str) -> list[float]:
        values = [float(x) for x in values]
        if len(values) != self.base_weights.numel() or not all(math.isfinite(x) for x in values):
            raise ValueError(f"`{name}` must hold {self.base_weights.numel()} finite numbers (one per objective), "
                             f"got {values}.")
        return values

    def update(self, scores: Sequence[float]) -> float:
        """Feed the latest validation scores (one per objective); returns the new meta-reward."""
        scores = self._checked(scores, "scores")
        if not self.buffer:
            self.buffer.append(scores)
            return self.meta_reward
        self.last_contribution = hypervolume_contribution(self.buffer, scores, self.maximize)
        self.meta_reward = hypervolume_meta_reward(self.last_contribution)
        if self.last_contribution > 0:
            self.buffer.append(scores)
        return self.meta_reward

    @property
    def weights(self) -> torch.Tensor:
        return self.meta_reward * self.base_weights

    def scalarize(self, rewards: torch.Tensor) -> torch.Tensor:
        return scalarize_rewards(rewards, self.weights)

    def log_dict(self) -> dict[str, float]:
        logs = {f"reward_weight/{name}": float(w) for name, w in zip(self.names, self.weights)}
        logs.update({"reward_weight/meta_reward": self.meta_reward,
                     "reward_weight/hv_contribution": self.last_contribution})
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": [list(p) for p in self.buffer], "meta_reward": self.meta_reward,
                "last_contribution": self.last_contribution}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.buffer = [list(p) for p in state_dict["buffer"]]
        self.meta_reward = float(state_dict["meta_reward"])
        self.last_contribution = float(state_dict.get("last_contribution", 0.0))


# ---- (b) gradient-based weight update


def objective_influence(gradients: torch.Tensor) -> torch.Tensor:
    """``s_k = Σ_j ⟨g_k, g_j⟩`` for per-objective policy gradients ``[K, P]`` → ``[K]`` (self term included).

    An objective whose gradient agrees with the others' (and is large) has high influence. Lu et al. keep the self
    term ``⟨g_k, g_k⟩`` and do not normalise the gradients (DoGE drops the self term: methods.md cross-check 7).
    """
    gradients = torch.as_tensor(gradients)
    if gradients.dim() != 2:
        raise ValueError(f"gradients must be [K objectives, P parameters], got {list(gradients.shape)}.")
    return (gradients @ gradients.T).sum(dim=1)


def gradient_weight_update(weights: Sequence[float] | torch.Tensor, influence: Sequence[float] | torch.Tensor,
                           lr: float, regularization: float = 1e-5) -> torch.Tensor:
    """Lu et al. (arXiv 2509.11452, method (b)): ``w ← softmax(log w + lr · s / λ)``.

    ``weights`` ``[K]`` (a distribution), ``influence`` ``s`` ``[K]`` (`objective_influence`), ``lr`` the actor's
    current learning rate ``η_t``, ``regularization`` ``λ`` (default 1e-5, the official ``regularization_factor``).
    Multiplicative-weights / mirror-ascent step: the result stays on the simplex; a zero weight stays zero.
    """
    weights = _as_weights(weights)
    influence = torch.as_tensor(influence, dtype=torch.float64).flatten()
    if influence.numel() != weights.numel():
        raise ValueError(f"influence has {influence.numel()} entries for {weights.numel()} weights.")
    if not regularization > 0:
        raise ValueError(f"`regularization` must be > 0, got {regularization}.")
    if not lr >= 0:
        raise ValueError(f"`lr` must be >= 0, got {lr}.")
    return torch.softmax(torch.log(weights) + lr * influence / regularization, dim=0)


class GradientRewardWeighting:
    """Gradient-based reward weighting (Lu et al., arXiv 2509.11452, method (b)), with influence accumulation.

    `accumulate(gradients)` adds ``s = objective_influence(gradients)`` (``gradients``: ``[K, P]``, each objective's
    policy gradient on the selected layers); every ``accumulation_steps`` calls, `step(lr)` applies
    `gradient_weight_update` with the mean influence and resets it. Defaults: initial weights uniform if not given,
    ``regularization=1e-5``, ``accumulation_steps=1``.

    The official code never resets its accumulator, so from the second update on it uses the running *sum* of all
    past influences divided by ``accumulation_steps``; ``reset_after_update=False`` reproduces that, the default
    follows the paper's "average over the accumulation window".
    """

    def __init__(self, weights: Sequence[float] | None = None, *, num_objectives: int | None = None,
                 regularization: float = 1e-5, accumulation_steps: int = 1, reset_after_update: bool = True,
                 names: Sequence[str] | None = None):
        if weights is None:
            if not num_objectives or num_objectives < 1:
                raise ValueError("Give initial `weights` or `num_objectives` (uniform weights).")
            weights = [1.0 / num_objectives] * num_objectives
        self._weights = _as_weights(weights)
        if not math.isclose(float(self._weights.sum()), 1.0, abs_tol=1e-3):
            raise ValueError(f"`weights` must sum to 1 (a distribution over objectives), got {self._weights.tolist()}.")
        self._weights = self._weights / self._weights.sum()
        if not regularization > 0:
            raise ValueError(f"`regularization` must be > 0, got {regularization}.")
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(f"`accumulation_steps` must be a positive int, got {accumulation_steps!r}.")
        self.regularization = regularization
        self.accumulation_steps = accumulation_steps
        self.reset_after_update = reset_after_update
        self.names = _objective_names(names, self._weights.numel())
        self._influence_sum = torch.zeros_like(self._weights)
        self._pending = 0
        self.last_influence = torch.zeros_like(self._weights)

    def accumulate(self, gradients: torch.Tensor) -> None:
        influence = objective_influence(torch.as_tensor(gradients, dtype=torch.float64))
        if influence.numel() != self._weights.numel():
            raise ValueError(f"gradients have {influence.numel()} objectives, the weights {self._weights.numel()}.")
        self._influence_sum += influence
        self._pending += 1

    def step(self, lr: float) -> bool:
        """Update the weights if ``accumulation_steps`` influences were accumulated; returns whether it did."""
        if self._pending < self.accumulation_steps:
            return False
        self.last_influence = self._influence_sum / self.accumulation_steps
        self._weights = gradient_weight_update(self._weights, self.last_influence, lr, self.regularization)
        self._pending = 0
        self._influence_sum = torch.zeros_like(self._weights) if self.reset_after_update else self.last_influence
        return True

    @property
    def weights(self) -> torch.Tensor:
        return self._weights.clone()

    def scalarize(self, rewards: torch.Tensor) -> torch.Tensor:
        return scalarize_rewards(rewards, self._weights)

    def log_dict(self) -> dict[str, float]:
        logs = {f"reward_weight/{name}": float(w) for name, w in zip(self.names, self._weights)}
        logs.update({f"reward_influence/{name}": float(s) for name, s in zip(self.names, self.last_influence)})
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self._weights.clone(), "influence_sum": self._influence_sum.clone(),
                "pending": self._pending, "last_influence": self.last_influence.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._weights = state_dict["weights"].clone().to(torch.float64)
        self._influence_sum = state_dict["influence_sum"].clone().to(torch.float64)
        self._pending = int(state_dict["pending"])
        self.last_influence = state_dict["last_influence"].clone().to(torch.float64)

