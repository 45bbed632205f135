"""Domain-weight update rules (DoReMi, DoGE, Velocitune, Cooldown) as a registry of pure functions.

A rule maps the current domain weights (a distribution over K domains) and this step's per-domain signals to new
weights::

    @register_domain_update("name", inputs=("losses",))
    def my_rule(weights: Tensor, *, step: int, losses: Tensor, eta: float = 1.0) -> Tensor:
        ...  # [K] new weights, non-negative, summing to 1

``inputs`` names the per-step signals (per-domain losses, gradients, ...) the caller computes; every other
keyword-only parameter with a default is a hyper-parameter, settable from a recipe and checked before training by
`validate_domain_update`. Call rules through `update_domain_weights`, which checks names, shapes and that the
weights stay a distribution. `DomainWeightState` keeps the current weights, their running average (DoReMi and DoGE
output the average, not the last weights) and the step, and is saved in checkpoints.

Unknown rule names, inputs or hyper-parameters fail with the valid names in the message.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..registry_utils import describe_hparams, lookup, reject_unknown

UpdateFn = Callable[..., torch.Tensor]

# Tolerance on Σw = 1: recipes write weights with a few decimals, and float32 sums drift by ~1e-7 per domain.
_SUM_TOL = 1e-4


@dataclass(frozen=True)
class DomainUpdateSpec:
    """What the registry knows about one update rule."""

    name: str
    fn: UpdateFn
    inputs: tuple[str, ...]  # per-step signals, passed by the caller at every update
    required: tuple[str, ...] = ()  # the inputs without a default
    hparams: dict[str, Any] = field(default_factory=dict)  # name -> default
    check: Callable[..., None] | None = None  # validates hyper-parameters (called with all of them, defaults filled)

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""


_DOMAIN_UPDATES: dict[str, DomainUpdateSpec] = {}


def register_domain_update(
    name: str, *, inputs: Sequence[str], check: Callable[..., None] | None = None
) -> Callable[[UpdateFn], UpdateFn]:
    """Register ``fn(weights, *, step, <inputs>, <hparams>) -> new_weights`` under ``name``.

    ``inputs`` must be keyword-only parameters of ``fn``; the remaining keyword-only parameters with defaults are the
    rule's hyper-parameters. ``check(**hparams)`` (optional) raises a ValueError for invalid hyper-parameter values.
    """

    def decorator(fn: UpdateFn) -> UpdateFn:
        if name in _DOMAIN_UPDATES:
            raise ValueError(f"A domain-weight update rule named {name!r} is already registered.")
        params = inspect.signature(fn).parameters
        keyword_only = {p.name: p for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        if "step" not in keyword_only:
            raise ValueError(f"register_domain_update({name!r}): the rule must take a keyword-only `step`.")
        missing = [i for i in inputs if i not in keyword_only]
        if missing:
            raise ValueError(f"register_domain_update({name!r}): inputs {missing} are not keyword-only parameters.")
        hparams = {
            p.name: p.default for p in keyword_only.values()
            if p.name not in inputs and p.name != "step" and p.default is not inspect.Parameter.empty
        }
        required = tuple(i for i in inputs if keyword_only[i].default is inspect.Parameter.empty)
        _DOMAIN_UPDATES[name] = DomainUpdateSpec(
            name=name, fn=fn, inputs=tuple(inputs), required=required, hparams=hparams, check=check
        )
        return fn

    return decorator


def list_domain_updates() -> list[str]:
    return sorted(_DOMAIN_UPDATES)


def get_domain_update(name: str) -> DomainUpdateSpec:
    return lookup(_DOMAIN_UPDATES, name, "domain-weight update rule")


def _describe(spec: DomainUpdateSpec) -> str:
    hparams = describe_hparams(spec.hparams)
    return f"inputs: {', '.join(spec.inputs) or 'none'}; hyper-parameters: {hparams}"


def validate_domain_update(name: str, **hparams: Any) -> None:
    """Check a rule name and its hyper-parameters (names and values) before training starts."""
    spec = get_domain_update(name)
    reject_unknown(hparams, spec.hparams, f"Domain-weight update rule {name!r}", f"Its {_describe(spec)}")
    if spec.check is not None:
        spec.check(**{**spec.hparams, **hparams})


def check_distribution(weights: torch.Tensor, what: str = "weights") -> None:
    """Raise a ValueError unless ``weights`` is a 1-D, finite, non-negative tensor summing to 1."""
    if not isinstance(weights, torch.Tensor) or weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(f"`{what}` must be a non-empty 1-D tensor over the K domains, got {weights!r}.")
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"`{what}` must be finite and non-negative, got {weights.tolist()}.")
    total = float(weights.double().sum())
    if abs(total - 1.0) > _SUM_TOL:
        raise ValueError(f"`{what}` must sum to 1 (a distribution over domains), got sum {total:.6g}.")


def update_domain_weights(name: str, weights: torch.Tensor, *, step: int, **inputs_and_hparams: Any) -> torch.Tensor:
    """Apply the registered rule ``name`` to ``weights`` ([K], a distribution) at update step ``step`` (0-based).

    ``inputs_and_hparams`` holds the rule's per-step inputs and any hyper-parameters to override (see
    `list_domain_updates()` and each rule's docstring). Returns the new weights, [K], same dtype, summing to 1.
    """
    spec = get_domain_update(name)
    reject_unknown(inputs_and_hparams, [*spec.inputs, *spec.hparams], f"Domain-weight update rule {name!r}",
                   f"Its {_describe(spec)}")
    missing = [i for i in spec.required if inputs_and_hparams.get(i) is None]
    if missing:
        raise ValueError(f"Domain-weight update rule {name!r} needs the input(s) {missing}. Its {_describe(spec)}.")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"`step` must be a non-negative integer, got {step!r}.")
    check_distribution(weights)
    hparams = {k: v for k, v in inputs_and_hparams.items() if k in spec.hparams}
    if spec.check is not None:
        spec.check(**{**spec.hparams, **hparams})
    with torch.no_grad():
        new = spec.fn(weights.detach(), step=step, **inputs_and_hparams)
    if new.shape != weights.shape:
        raise RuntimeError(f"rule {name!r} returned shape {tuple(new.shape)}, expected {tuple(weights.shape)}")
    check_distribution(new, f"weights returned by rule {name!r}")
    return new.to(weights.dtype)


# ------------------------------------------------------------------------------------------------------ helpers


def _as_domain_vector(value: Any, num_domains: int, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(value, dtype=torch.float64)
    if tensor.shape != (num_domains,):
        raise ValueError(f"`{what}` must have shape [K] = [{num_domains}] (one value per domain), got "
                         f"{tuple(tensor.shape)}.")
    return tensor


def _smooth(weights: torch.Tensor, eps: float) -> torch.Tensor:
    """Mix with the uniform distribution: (1 − ε)·w + ε/K."""
    return (1.0 - eps) * weights + eps / weights.numel()


def _exponentiated_step(weights: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """softmax(log w + scores): the multiplicative-weights / mirror-descent step, in log space for stability."""
    return torch.softmax(torch.log(weights) + scores, dim=0)


def domain_sums(
    values: torch.Tensor, domain_ids: torch.Tensor, num_domains: int, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-domain sums and counts of ``values``: ([K], [K]).

    ``values`` is [B] (one value per example) or [B, T] (per token); ``domain_ids`` is [B] (long, in [0, K)); ``mask``
    (same shape as ``values``) selects the entries that count. Sums and counts, unlike means, can be added across
    ranks and accumulation steps before dividing.
    """
    domain_ids = torch.as_tensor(domain_ids, device=values.device).long()
    if domain_ids.ndim != 1 or domain_ids.shape[0] != values.shape[0]:
        raise ValueError(f"`domain_ids` must be [B] = [{values.shape[0]}], got {tuple(domain_ids.shape)}.")
    if domain_ids.numel() and (domain_ids.min() < 0 or domain_ids.max() >= num_domains):
        raise ValueError(f"`domain_ids` must lie in [0, {num_domains}), got {domain_ids.unique().tolist()}.")
    ids = domain_ids.view(-1, *([1] * (values.ndim - 1))).expand_as(values)
    keep = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()
    sums = torch.zeros(num_domains, dtype=torch.float64, device=values.device)
    counts = torch.zeros(num_domains, dtype=torch.float64, device=values.device)
    sums.index_add_(0, ids[keep], values[keep].double())
    counts.index_add_(0, ids[keep], torch.ones_like(values[keep], dtype=torch.float64))
    return sums, counts


def per_domain_excess_loss(
    token_losses: torch.Tensor,
    ref_token_losses: torch.Tensor,
    domain_ids: torch.Tensor,
    num_domains: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """DoReMi's per-domain score λ_i = mean over the tokens of domain i of max(ℓ_θ(x_t) − ℓ_ref(x_t), 0); [K].

    Clipping is per token, then averaged (paper Alg. 1 and the official code), which is ≥ the clipped mean excess.
    Domains absent from the batch get NaN, which `doremi` replaces by ``previous_excess_loss``. Shapes as in
    `domain_sums`. For several ranks, gather `domain_sums` of the clipped excess instead and divide once.
    """
    if token_losses.shape != ref_token_losses.shape:
        raise ValueError(f"token_losses {tuple(token_losses.shape)} and ref_token_losses "
                         f"{tuple(ref_token_losses.shape)} must have the same shape.")
    excess = (token_losses.detach() - ref_token_losses.detach()).clamp(min=0)
    sums, counts = domain_sums(excess, domain_ids, num_domains, mask)
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))


def average_domain_weights(history: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """The time average ᾱ = (1/T) Σ_t α_t of per-step weights ([T, K] or a list of [K]): DoReMi's/DoGE's output."""
    stacked = torch.stack(list(history)) if not isinstance(history, torch.Tensor) else history
    if stacked.ndim != 2 or stacked.shape[0] == 0:
        raise ValueError(f"`history` must be [T, K] with T >= 1, got shape {tuple(stacked.shape)}.")
    for row in stacked:
        check_distribution(row, "each step's weights")
    return stacked.double().mean(dim=0).to(stacked.dtype)


# -------------------------------------------------------------------------------------------------------- DoReMi


def _check_doremi(*, eta: float, eps: float) -> None:
    if not (isinstance(eta, (int, float)) and eta > 0 and math.isfinite(eta)):
        raise ValueError(f"doremi: `eta` (step size of the exponentiated-gradient update) must be > 0, got {eta!r}.")
    if not (isinstance(eps, (int, float)) and 0 <= eps <= 1):
        raise ValueError(f"doremi: `eps` (smoothing toward uniform) must be in [0, 1], got {eps!r}; the paper uses "
                         "1e-3.")


@register_domain_update(
    "doremi", inputs=("excess_loss", "losses", "ref_losses", "previous_excess_loss"), check=_check_doremi
)
def doremi(
    weights: torch.Tensor,
    *,
    step: int,
    excess_loss: torch.Tensor | None = None,
    losses: torch.Tensor | None = None,
    ref_losses: torch.Tensor | None = None,
    previous_excess_loss: torch.Tensor | None = None,
    eta: float = 1.0,
    eps: float = 1e-3,
) -> torch.Tensor:
    """DoReMi (Xie et al., NeurIPS 2023, arXiv 2305.10429): Group-DRO exponentiated-gradient step on excess loss.

    λ_i = max(excess_i, 0);  α' = softmax(log α + η·λ);  α_new = (1 − ε)·α' + ε/K.

    Inputs (per-domain, shape [K]), one of:
      - ``excess_loss``: λ before clipping, e.g. from `per_domain_excess_loss` (per-token clipping, as in the paper
        and the official code; then the clip here is a no-op);
      - ``losses`` and ``ref_losses``: per-domain mean losses of the proxy and the reference model; the excess
        ``losses − ref_losses`` is clipped per domain.
    NaN entries mark domains absent from the batch: as in the official code they reuse the previous score
    (``previous_excess_loss`` [K]), or 0 (no change to that domain's logit) when none is given.

    Hyper-parameters: ``eta`` (η, default 1), ``eps`` (smoothing c, default 1e-3 as in the paper and its run scripts;
    the code's argument default is 1e-4, and the README's claim that the paper uses 1 confuses ε with η —
    methods.md cross-check 6). The final weights are the average over steps (`DomainWeightState.average`), not the
    last ones. ``step`` is unused.
    """
    k = weights.numel()
    if excess_loss is not None:
        if losses is not None or ref_losses is not None:
            raise ValueError("doremi: pass either `excess_loss` or `losses` + `ref_losses`, not both.")
        excess = _as_domain_vector(excess_loss, k, "excess_loss")
    elif losses is not None and ref_losses is not None:
        excess = _as_domain_vector(losses, k, "losses") - _as_domain_vector(ref_losses, k, "ref_losses")
    else:
        raise ValueError("doremi needs per-domain `excess_loss` [K], or both `losses` and `ref_losses` [K].")
    if torch.isinf(excess).any():
        raise ValueError(f"doremi: the excess loss must be finite (NaN marks an absent domain), got {excess.tolist()}.")
    fallback = (torch.zeros(k, dtype=torch.float64) if previous_excess_loss is None
                else _as_domain_vector(previous_excess_loss, k, "previous_excess_loss"))
    scores = torch.where(torch.isnan(excess), fallback, excess).clamp(min=0)
    return _smooth(_exponentiated_step(weights.double(), eta * scores), eps)


# ---------------------------------------------------------------------------------------------------------- DoGE


def _check_doge(*, mu: float, dw_min: float, dw_max: float, eps: float, include_self: bool, normalize: bool,
                target_domains: Sequence[int] | None) -> None:
    if not mu > 0:
        raise ValueError(f"doge: `mu` (Bregman step scale; scores are divided by it) must be > 0, got {mu!r}.")
    if not dw_min <= dw_max:
        raise ValueError(f"doge: need `dw_min` <= `dw_max` (score clip bounds, in units of the learning rate), got "
                         f"{dw_min!r} > {dw_max!r}.")
    if not 0 <= eps <= 1:
        raise ValueError(f"doge: `eps` (smoothing toward uniform) must be in [0, 1], got {eps!r}.")
    if target_domains is not None and len(target_domains) == 0:
        raise ValueError("doge: `target_domains` must list at least one domain index, or be unset (all domains).")


@register_domain_update(
    "doge", inputs=("grads", "gram", "target_grads", "target_gram", "learning_rate"), check=_check_doge
)
def doge(
    weights: torch.Tensor,
    *,
    step: int,
    learning_rate: float,
    grads: torch.Tensor | None = None,
    gram: torch.Tensor | None = None,
    target_grads: torch.Tensor | None = None,
    target_gram: torch.Tensor | None = None,
    mu: float = 0.01,
    dw_min: float = 0.0,
    dw_max: float = 5.0,
    eps: float = 0.0,
    include_self: bool = True,
    normalize: bool = True,
    target_domains: Sequence[int] | None = None,
) -> torch.Tensor:
    """DoGE (Fan, Pagliardini, Jaggi, ICML 2024, arXiv 2310.15393): reweight by gradient alignment with the targets.

    W_i = Σ_{j∈target} ⟨g_i, g_j⟩;  s_i = clip(η_t·W_i / (mean_i ‖g_i‖ + 1e-6), η_t·dw_min, η_t·dw_max);
    α_new = (1 − ε)·softmax(log α + s/μ) + ε/K.

    Inputs: ``learning_rate`` η_t (the proxy's current learning rate) and the K training domains' gradients, either
    ``grads`` [K, P] (flattened, after clipping to max_grad_norm as in the official code) or their inner products
    ``gram`` [K, K] (norms are read off its diagonal). Targets:
      - default (universal setting): the training domains themselves, or the subset ``target_domains`` (indices);
      - out-of-domain: ``target_grads`` [M, P] (needs ``grads``) or ``target_gram`` [K, M] = ⟨g_i, g_target_m⟩.

    Self term (methods.md cross-check 7): with in-set targets, ``include_self=True`` (default) keeps ⟨g_i, g_i⟩ —
    the paper's W_i = ⟨∇ℓ_i, Σ_{j∈[k]} ∇ℓ_j⟩, the first-order decrease of the target loss from a step on domain i
    (our reading of the paper, from memory; not re-checked against the PDF); ``include_self=False`` drops it as the
    official code (`src/trainer.py`) does. ``normalize`` divides by the mean
    gradient norm, as the code does (set False for the raw inner products, as in methods.md §11).

    Defaults from the official ``config/doge.json``: μ=0.01 (argument default 0.05), dw_min=0, dw_max=5, ε=0.
    Final weights: the average over steps (`DomainWeightState.average`). ``step`` is unused.
    """
    k = weights.numel()
    learning_rate = float(learning_rate)
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"doge: `learning_rate` (the proxy's current learning rate η_t) must be > 0, got "
                         f"{learning_rate!r}.")
    if (grads is None) == (gram is None):
        raise ValueError("doge needs exactly one of `grads` [K, P] or `gram` [K, K] for the K training domains.")
    if grads is not None:
        grads = torch.as_tensor(grads).double()
        if grads.ndim != 2 or grads.shape[0] != k:
            raise ValueError(f"doge: `grads` must be [K, P] = [{k}, P], got {tuple(grads.shape)}.")
        gram = grads @ grads.T
    else:
        gram = torch.as_tensor(gram).double()
        if gram.shape != (k, k):
            raise ValueError(f"doge: `gram` must be [K, K] = [{k}, {k}], got {tuple(gram.shape)}.")
    if target_grads is not None and target_gram is not None:
        raise ValueError("doge: pass at most one of `target_grads` and `target_gram`.")
    out_of_set = target_grads is not None or target_gram is not None
    if out_of_set and target_domains is not None:
        raise ValueError("doge: `target_domains` selects targets among the training domains; it cannot be combined "
                         "with out-of-domain `target_grads` / `target_gram`.")

    if target_grads is not None:
        if grads is None:
            raise ValueError("doge: `target_grads` needs the training `grads` (not `gram`); or pass `target_gram`.")
        target_grads = torch.as_tensor(target_grads).double()
        if target_grads.ndim != 2 or target_grads.shape[1] != grads.shape[1]:
            raise ValueError(f"doge: `target_grads` must be [M, P] with P = {grads.shape[1]}, got "
                             f"{tuple(target_grads.shape)}.")
        alignment = (grads @ target_grads.T).sum(dim=1)
    elif target_gram is not None:
        target_gram = torch.as_tensor(target_gram).double()
        if target_gram.ndim != 2 or target_gram.shape[0] != k:
            raise ValueError(f"doge: `target_gram` must be [K, M] = [{k}, M], got {tuple(target_gram.shape)}.")
        alignment = target_gram.sum(dim=1)
    else:
        targets = list(range(k)) if target_domains is None else [int(j) for j in target_domains]
        if any(j < 0 or j >= k for j in targets) or len(set(targets)) != len(targets):
            raise ValueError(f"doge: `target_domains` must be distinct indices in [0, {k}), got {list(targets)}.")
        in_target = torch.zeros(k, dtype=torch.bool)
        in_target[targets] = True
        alignment = gram[:, in_target].sum(dim=1)
        if not include_self:
            alignment = alignment - torch.where(in_target, gram.diagonal(), torch.zeros(k, dtype=torch.float64))

    scores = learning_rate * alignment
    if normalize:
        scores = scores / (gram.diagonal().clamp(min=0).sqrt().mean() + 1e-6)
    scores = scores.clamp(min=learning_rate * dw_min, max=learning_rate * dw_max)
    return _smooth(_exponentiated_step(weights.double(), scores / mu), eps)


# ---------------------------------------------------------------------------------------------------- Velocitune


@register_domain_update("velocitune", inputs=("losses", "initial_losses", "target_losses"))
def velocitune(
    weights: torch.Tensor,
    *,
    step: int,
    losses: torch.Tensor,
    initial_losses: torch.Tensor,
    target_losses: torch.Tensor,
) -> torch.Tensor:
    """Velocitune (Luo et al., ACL 2025, arXiv 2411.14318): up-weight domains that learn slowest.

    V_i = clip((ℓ_t^i − ℓ_target^i) / (ℓ_init^i − ℓ_target^i), 0, 1)   (the normalised remaining gap: larger V
    means slower progress);  w_new = w ⊙ exp(V) / Σ_j w_j exp(V_j).

    Inputs, all [K]: ``losses`` (current per-domain loss ℓ_t), ``initial_losses`` (ℓ_init, at the start of training),
    ``target_losses`` (ℓ_target, which the paper extrapolates per domain from a Chinchilla-law fit
    ``L(N, D) = E + A/N^a + B/D^b`` on proxy runs; fit it offline and pass the result). Each ℓ_init must exceed
    ℓ_target. The paper updates every m steps; call this at that cadence. No hyper-parameters; ``step`` is unused.
    Formula from methods.md §9c [SECONDARY]: no official code was available.
    """
    k = weights.numel()
    current = _as_domain_vector(losses, k, "losses")
    initial = _as_domain_vector(initial_losses, k, "initial_losses")
    target = _as_domain_vector(target_losses, k, "target_losses")
    for name, vector in (("losses", current), ("initial_losses", initial), ("target_losses", target)):
        if not torch.isfinite(vector).all():
            raise ValueError(f"velocitune: `{name}` must be finite, got {vector.tolist()}.")
    gap = initial - target
    if (gap <= 0).any():
        bad = torch.nonzero(gap <= 0).flatten().tolist()
        raise ValueError(f"velocitune: `initial_losses` must exceed `target_losses` in every domain (the velocity "
                         f"divides by their gap); not so for domain(s) {bad}.")
    velocity = ((current - target) / gap).clamp(0.0, 1.0)
    return _exponentiated_step(weights.double(), velocity)


# ------------------------------------------------------------------------------------------------------ Cooldown


def _check_cooldown(*, high_temperature: float, low_temperature: float, switch_step: int | None) -> None:
    from ..mixtures import CooldownSchedule

    if switch_step is None:
        raise ValueError("cooldown: set `switch_step`, the update step from which `low_temperature` applies (the "
                         "paper switches halfway through training).")
    CooldownSchedule(high_temperature=high_temperature, low_temperature=low_temperature, switch_step=switch_step)


@register_domain_update("cooldown", inputs=("sizes",), check=_check_cooldown)
def cooldown(
    weights: torch.Tensor,
    *,
    step: int,
    sizes: Sequence[int] | torch.Tensor,
    high_temperature: float = 5.0,
    low_temperature: float = 1.0,
    switch_step: int | None = None,
) -> torch.Tensor:
    """Cooldown ("Upsample or Upweight?", Li et al., NAACL 2025, arXiv 2410.04579): temperature shares on a schedule.

    w = p(i; τ(step)) with p(i; τ) = n_i^(1/τ) / Σ_j n_j^(1/τ) and τ = ``high_temperature`` before ``switch_step``,
    ``low_temperature`` from it on (paper: τ=5 for the first half, then τ=1). Input ``sizes`` [K]: the domains'
    sizes n_i. A schedule, not feedback: the current ``weights`` only fix K. See `alignment.mixtures.CooldownSchedule`.
    """
    from ..mixtures import CooldownSchedule

    if len(sizes) != weights.numel():
        raise ValueError(f"cooldown: `sizes` must have one entry per domain ({weights.numel()}), got {len(sizes)}.")
    schedule = CooldownSchedule(high_temperature=high_temperature, low_temperature=low_temperature,
                                switch_step=switch_step)
    return schedule.shares_at(step, sizes)


# ------------------------------------------------------------------------------------------------------ the state


class DomainWeightState:
    """Current domain weights, their running average and the number of updates; checkpointable.

    ``average`` is ᾱ = (1/T) Σ_{t=1..T} α_t over the weights produced by the T updates so far (the paper's DoReMi and
    DoGE output); before any update it is the initial weights. ``average_includes_initial=True`` also counts the
    initial α_0, as DoReMi's official code does (its running mean starts from the initial weights). ``buffers`` holds
    named per-domain tensors a caller keeps between updates (e.g. DoReMi's last scores for absent domains); they are
    saved with the rest.
    """

    def __init__(self, weights: torch.Tensor, domains: Sequence[str] | None = None,
                 average_includes_initial: bool = False):
        weights = torch.as_tensor(weights, dtype=torch.float32).detach().clone()
        check_distribution(weights, "initial domain weights")
        if domains is not None and len(domains) != weights.numel():
            raise ValueError(f"{len(domains)} domain names for {weights.numel()} weights.")
        self.domains = tuple(domains) if domains is not None else None
        self.weights = weights
        self.step = 0
        self.average_includes_initial = average_includes_initial
        self._sum = weights.double().clone() if average_includes_initial else torch.zeros_like(weights.double())
        self._count = 1 if average_includes_initial else 0
        self._initial = weights.clone()
        self.buffers: dict[str, torch.Tensor] = {}

    @classmethod
    def uniform(cls, domains: Sequence[str] | int, **kwargs: Any) -> "DomainWeightState":
        """Uniform weights over ``domains`` (names, or a count K)."""
        k = domains if isinstance(domains, int) else len(domains)
        names = None if isinstance(domains, int) else domains
        return cls(torch.full((k,), 1.0 / k), domains=names, **kwargs)

    @property
    def num_domains(self) -> int:
        return self.weights.numel()

    @property
    def average(self) -> torch.Tensor:
        if self._count == 0:
            return self._initial.clone()
        return (self._sum / self._count).to(self.weights.dtype)

    def record(self, new_weights: torch.Tensor) -> None:
        """Take ``new_weights`` as the current weights and count them in the average."""
        new_weights = torch.as_tensor(new_weights).detach().to(self.weights.dtype).cpu()
        if new_weights.shape != self.weights.shape:
            raise ValueError(f"new weights have shape {tuple(new_weights.shape)}, expected "
                             f"{tuple(self.weights.shape)}.")
        check_distribution(new_weights, "new domain weights")
        self.weights = new_weights.clone()
        self._sum += new_weights.double()
        self._count += 1
        self.step += 1

    def update(self, name: str, **inputs_and_hparams: Any) -> torch.Tensor:
        """One update with rule ``name`` at this state's step; records and returns the new weights."""
        new = update_domain_weights(name, self.weights, step=self.step, **inputs_and_hparams)
        self.record(new)
        return self.weights

    def as_dict(self, which: str = "current") -> dict[str, float]:
        """``{domain name (or index): weight}`` of the ``current`` or ``average`` weights, e.g. for logging."""
        values = {"current": self.weights, "average": self.average}[which]
        names = self.domains or [str(i) for i in range(self.num_domains)]
        return {name: float(value) for name, value in zip(names, values)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights.clone(),
            "initial": self._initial.clone(),
            "sum": self._sum.clone(),
            "count": self._count,
            "step": self.step,
            "domains": list(self.domains) if self.domains is not None else None,
            "average_includes_initial": self.average_includes_initial,
            "buffers": {key: value.detach().cpu().clone() for key, value in self.buffers.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a saved state; the domains (names, or the count) must match this state's."""
        saved_domains = state_dict.get("domains")
        if self.domains is not None and saved_domains is not None and tuple(saved_domains) != self.domains:
            raise ValueError(f"Saved domain weights are for domains {saved_domains}, this run has "
                             f"{list(self.domains)}.")
        if state_dict["weights"].numel() != self.num_domains:
            raise ValueError(f"Saved domain weights have {state_dict['weights'].numel()} domains, this run has "
                             f"{self.num_domains}.")
        self.weights = state_dict["weights"].clone()
        self._initial = state_dict["initial"].clone()
        self._sum = state_dict["sum"].clone()
        self._count = int(state_dict["count"])
        self.step = int(state_dict["step"])
        self.average_includes_initial = bool(state_dict["average_includes_initial"])
        self.buffers = {key: value.clone() for key, value in state_dict.get("buffers", {}).items()}
