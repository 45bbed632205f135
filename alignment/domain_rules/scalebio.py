"""ScaleBiO (Pan et al., ACL 2025, arXiv 2406.19976): the `scalebio` rule (the sampling-weight step of its first-order
penalty method for bilevel data reweighting), with the official code's AdamW on the logits λ (or plain SGD)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from .registry import (_as_domain_vector, _split_targets, _target_indices, _with_target_share,
                       register_domain_update)

# The AdamW state the rule keeps between updates ([K] moments, 0 on the validation domains; the step count t).
BUFFERS = ("exp_avg", "exp_avg_sq", "adamw_step")


def adamw_logit_step(logits: torch.Tensor, grad: torch.Tensor, buffers: Mapping[str, torch.Tensor], *, lr: float,
                     betas: Sequence[float], eps: float, weight_decay: float
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One `torch.optim.AdamW` step (amsgrad off, not maximising: how the official code builds it) on λ [G].

        t ← t + 1,  m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²
        λ' = (1 − η·wd)·λ − η/(1 − β1^t) · m / (√(v/(1 − β2^t)) + ε)

    ``buffers``: ``exp_avg`` m [G], ``exp_avg_sq`` v [G], ``adamw_step`` t [] (absent: zeros, the first step).
    Returns (λ' [G], the new buffers). Same order of operations as torch's single-tensor AdamW (decay first, ε added
    after the bias-corrected √v)."""
    beta1, beta2 = betas
    exp_avg = buffers.get("exp_avg", torch.zeros_like(grad))
    exp_avg_sq = buffers.get("exp_avg_sq", torch.zeros_like(grad))
    t = buffers.get("adamw_step", torch.zeros((), dtype=torch.float64)) + 1
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    bias1, bias2 = 1 - beta1 ** t, 1 - beta2 ** t
    logits = logits * (1 - lr * weight_decay) - (lr / bias1) * exp_avg / (exp_avg_sq.sqrt() / bias2.sqrt() + eps)
    return logits, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "adamw_step": t}


def sgd_logit_step(logits: torch.Tensor, grad: torch.Tensor, buffers: Mapping[str, torch.Tensor], *, lr: float,
                   weight_decay: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One `torch.optim.SGD` step (no momentum, the code's default) on λ [G]: λ' = λ − η·(g + wd·λ); no state."""
    return logits - lr * (grad + weight_decay * logits), {}


@dataclass(frozen=True)
class LogitOptimizer:
    """An optimizer of λ: its step, and the torch defaults of the settings the official code leaves unset
    (``get_optimizer`` passes only ``lr``), which are ours when the recipe leaves them unset too."""

    step: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    defaults: Mapping[str, Any]


OPTIMIZERS: dict[str, LogitOptimizer] = {
    "adamw": LogitOptimizer(adamw_logit_step, {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}),
    "sgd": LogitOptimizer(sgd_logit_step, {"weight_decay": 0.0}),
}


def _optimizer_settings(optimizer: str, **given: Any) -> dict[str, Any]:
    """The settings of ``optimizer``: those given (not None) over its torch defaults; a setting it does not have is
    an error (it would be ignored)."""
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ValueError(f"scalebio: `optimizer` (what steps the logits λ) must be one of {sorted(OPTIMIZERS)}, got "
                         f"{optimizer!r}.")
    set_ = {key: value for key, value in given.items() if value is not None}
    unused = sorted(set(set_) - set(OPTIMIZERS[optimizer].defaults))
    if unused:
        raise ValueError(f"scalebio: {unused} are not settings of `optimizer: {optimizer}` (it has "
                         f"{sorted(OPTIMIZERS[optimizer].defaults)}); remove them or use `optimizer: adamw`.")
    return {**OPTIMIZERS[optimizer].defaults, **set_}


def _is_real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


def _check_scalebio(*, target_domains: Sequence[int], step_size: float, penalty: float, target_share: float,
                    optimizer: str, betas: Sequence[float] | None, eps: float | None,
                    weight_decay: float | None) -> None:
    _target_indices(target_domains, 0, "scalebio")
    for name, value, what in (("step_size", step_size, "the learning rate of λ, the logits of the weights"),
                              ("penalty", penalty, "α, the penalty multiplier")):
        if not (_is_real(value) and value > 0):
            raise ValueError(f"scalebio: `{name}` ({what}) must be a finite number > 0, got {value!r}.")
    if not (_is_real(target_share) and 0 <= target_share < 1):
        raise ValueError(f"scalebio: `target_share` (the fixed weight kept on the validation domains; 0 = never train "
                         f"on them, as the paper) must be in [0, 1), got {target_share!r}.")
    settings = _optimizer_settings(optimizer, betas=betas, eps=eps, weight_decay=weight_decay)
    if "betas" in settings:
        b = settings["betas"]
        if isinstance(b, (str, bytes)) or not hasattr(b, "__len__") or len(b) != 2 or \
                not all(_is_real(x) and 0 <= x < 1 for x in b):
            raise ValueError(f"scalebio: `betas` (AdamW's (β1, β2)) must be two numbers in [0, 1), e.g. "
                             f"[0.9, 0.999], got {b!r}.")
    if "eps" in settings and not (_is_real(settings["eps"]) and settings["eps"] > 0):
        raise ValueError(f"scalebio: `eps` (AdamW's ε) must be a finite number > 0, got {settings['eps']!r}.")
    wd = settings["weight_decay"]
    if not (_is_real(wd) and wd >= 0 and step_size * wd < 1):
        raise ValueError(f"scalebio: `weight_decay` must be a finite number >= 0 with step_size·weight_decay < 1 (λ "
                         f"is scaled by 1 − step_size·weight_decay each step), got {wd!r} with step_size "
                         f"{step_size!r}.")


def softmax_logit_gradient(probs: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """∂/∂λ of Σ_i p_i(λ)·d_i with p = softmax(λ): J(p)·d = p ⊙ (d − ⟨p, d⟩), J = diag(p) − p pᵀ. [K] -> [K]."""
    return probs * (d - (probs * d).sum())


@register_domain_update("scalebio", inputs=("grads", "loss_gap"), check=_check_scalebio, buffers=BUFFERS)
def scalebio(
    weights: torch.Tensor,
    *,
    step: int,
    target_domains: Sequence[int],
    buffers: Mapping[str, torch.Tensor],
    grads: torch.Tensor | None = None,
    loss_gap: torch.Tensor | None = None,
    step_size: float = 1e-2,
    penalty: float = 10.0,
    target_share: float = 0.0,
    optimizer: str = "adamw",
    betas: Sequence[float] | None = None,
    eps: float | None = None,
    weight_decay: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ScaleBiO (Pan et al., arXiv 2406.19976): an AdamW (or SGD) step on the logits λ of the weights p = softmax(λ).

    The bilevel problem min_λ L1(w*(λ)) s.t. w*(λ) = argmin_w L2(w, λ) = Σ_i p_i·ℓ_i(w) (L1: validation loss, ℓ_i:
    mean training loss of source i) becomes, with a penalty α, min_{λ,w} max_u L1(w) + α·(L2(w, λ) − L2(u, λ)). Its
    λ-gradient and our step (G: the generic, non-validation domains; p the current weights over G):

        d_i = α·(ℓ_i(w) − ℓ_i(u))                           (``loss_gap`` = ℓ(w) − ℓ(u), [K])
        g   = ∇_λ = J(p)·d = p ⊙ (d − ⟨p, d⟩)
        λ   = log p
        ``optimizer: adamw`` (default, the official code's; torch.optim.AdamW, lr η = ``step_size``):
            t ← t + 1,  m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²
            λ' = (1 − η·wd)·λ − η/(1 − β1^t) · m / (√(v/(1 − β2^t)) + ε)
        ``optimizer: sgd`` (torch.optim.SGD without momentum):  λ' = λ − η·(g + wd·λ)
        p'  = softmax(λ')

    m, v, t are ``buffers`` (``exp_avg``, ``exp_avg_sq`` [K], 0 on the validation domains, and ``adamw_step``), kept
    in `DomainWeightState.buffers` between updates and checkpointed with it; the rule itself is pure (buffers in,
    ``(weights, new buffers)`` out). λ itself is not kept: with λ_true = log p + c·1 (c = logsumexp λ_true), the
    decoupled decay gives (1 − η·wd)·λ_true = (1 − η·wd)·log p + const·1 and the Adam/SGD move depends on the
    gradients only, so softmax(λ'), which ignores constants, is the same from log p; λ = log p is exact for both
    optimizers (tested over several steps against torch.optim.AdamW on a λ parameter). The decay pulls λ toward 0,
    i.e. p toward uniform (the official λ starts at 0 = uniform); from non-uniform initial weights we pull toward
    uniform too, not toward them.

    Online (``grads`` [K, P], the input the training loop gives): our one model is the paper's lower-level model u
    (trained on the p-weighted training loss); w, a second model trained on L1 + α·L2, does not exist here. We take
    for w one gradient step of the validation loss from u with step 1/α, w = u − g_val/α, whose loss gap to first
    order is α·(ℓ_i(w) − ℓ_i(u)) ≈ −⟨g_i, g_val⟩, so

        d_i = −⟨g_i, ḡ_val⟩,   ḡ_val = mean of the ``target_domains`` rows of ``grads``

    (α cancels; ``penalty`` only scales ``loss_gap``). Then the step raises the weight of sources whose gradient
    points along the validation gradient, like DoGE/DGA but on the softmax logits (p ⊙ (a − ⟨p, a⟩) instead of EG).
    With AdamW the scale of d hardly matters (m/√v is about ±1 at the first step: λ moves by about η per step).

    Paper / official code (``2003pro/ScaleBiO`` and ``research4pan/scalebio``, ``python/minmax.py``,
    ``python/samp_p.py``, ``python/training_utils.py``, ``run_gpt2.sh``) vs ours:
      - code: u and w are two full models updated every step (AdamW, ``lr_u = lr_w = 1e-5``), and λ.grad is
        autograd of α·(Σ_i p_i·mean loss of w on source i − same for u) on the same minibatch (``SampProb``:
        per-example weight p_i/n_i), i.e. exactly ``loss_gap`` above; ours with ``loss_gap`` reproduces that step;
      - online we have no w (it would need a second model copy and its optimizer): the ``grads`` form replaces
        ℓ(w) − ℓ(u) by the one-step, identity-Hessian approximation above. The code's w accumulates the validation
        pull over all steps (and its Hessian term), ours is a fresh step from the current model every update;
      - λ's optimizer: ``get_optimizer(samp_prob_p.parameters(), {"name": "adamw", "lr": lr})`` before the code sets
        ``weight_decay`` 5e-4 for w, so λ gets torch's AdamW defaults: betas (0.9, 0.999), eps 1e-8, weight decay
        0.01 (on λ), amsgrad off: our defaults (``betas``/``eps``/``weight_decay`` None = those; for ``sgd``, torch's
        weight decay 0, and ``betas``/``eps`` are rejected). ``step_size`` default 1e-2 = ``lr_lambda`` of
        run_gpt2.sh and run_Yi34B.sh (the code uses it whatever ``--optimizer`` is, so also for ``sgd``);
      - λ's learning rate in the code follows the models' cosine schedule, ``lr_lambda·lr_t/init_lr`` (to 0 at the
        end); ours is constant ``step_size`` (the rule does not see the schedule);
      - ``penalty`` default α = 10 from run_gpt2.sh (run_Yi34B.sh: 100), τ = 1 (constant α);
      - validation set: in the code a separate file never trained on by u; here ``target_domains`` of the training
        data with ``target_share`` (default 0 = not trained on; use ``domain_reweighting_mode: upweight`` so that
        their gradient stays fresh, see `dga`). LISA (random layer freezing) is not applied: which parameters the
        gradients cover is ``domain_doge_*``.
    ``step`` is unused (AdamW counts its own t, which a `DomainWeightState` round trip keeps).
    """
    settings = _optimizer_settings(optimizer, betas=betas, eps=eps, weight_decay=weight_decay)
    k = weights.numel()
    if (grads is None) == (loss_gap is None):
        raise ValueError("scalebio needs exactly one of `grads` [K, P] (online) or `loss_gap` [K] = ℓ(w) − ℓ(u).")
    if grads is not None:
        in_target, alignment = _split_targets(grads, target_domains, k, "scalebio")
        d = -alignment
    else:
        in_target = torch.zeros(k, dtype=torch.bool)
        in_target[_target_indices(target_domains, k, "scalebio")] = True
        gap = _as_domain_vector(loss_gap, k, "loss_gap")
        if not torch.isfinite(gap[~in_target]).all():
            raise ValueError(f"scalebio: `loss_gap` must be finite on the training domains, got {gap.tolist()}.")
        d = penalty * gap
    generic = weights.double()[~in_target]
    if not generic.sum() > 0:
        raise ValueError("scalebio: the current weights put no mass on the training (non-validation) domains; give "
                         "them non-zero initial weights (`domain_initial_weights`).")
    probs = generic / generic.sum()
    moments = {}
    for key, value in buffers.items():
        value = value.double()
        if key != "adamw_step" and value.shape != (k,):
            raise ValueError(f"scalebio: the kept AdamW buffer `{key}` has shape {tuple(value.shape)}, expected [K] = "
                             f"[{k}] (a checkpoint from a run with other domains?).")
        moments[key] = value if key == "adamw_step" else value[~in_target]
    logits, moments = OPTIMIZERS[optimizer].step(torch.log(probs), softmax_logit_gradient(probs, d[~in_target]),
                                                 moments, lr=step_size, **settings)
    new_buffers = {}
    for key, value in moments.items():
        if key != "adamw_step":
            value = torch.zeros(k, dtype=torch.float64).masked_scatter(~in_target, value)
        new_buffers[key] = value
    return _with_target_share(torch.softmax(logits, dim=0), in_target, target_share), new_buffers
