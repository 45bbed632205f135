"""DIAL (Wu & Choudhury 2025, "Aligning LLMs with Domain Invariant Reward Models", arXiv 2501.00911): a reward
model trained on labelled *source* pairs whose embeddings are pulled toward those of unlabelled *target* pairs by a
Wasserstein critic (WDGRL, Shen et al. 2018, arXiv 1707.01217) — `reward_invariance: dial`.

Objective of the reward model (``e(x)``: the reward model's last-layer hidden state at the token it scores, the
critic ``f`` a small MLP trained alongside)::

    L = mean_{source pairs} -log sigma(r(x_c) - r(x_r))  +  lambda * W
    W = mean_{x in S} f(e(x)) - mean_{x in T} f(e(x))

``S``: the chosen and rejected completions of the batch's source pairs, ``T``: those of its target pairs (the target
pairs' order, i.e. their labels, is never read). Before each such loss the critic takes ``critic_iterations`` Adam
steps on the detached embeddings, maximising ``W - gradient_penalty * GP`` with the WGAN-GP penalty
``GP = mean_z (||grad_z f(z)|| - 1)^2`` on interpolates between source and target embeddings (and on the embeddings
themselves). The critic is the adversary; the reward model minimises the distance the critic can find.

This file holds the pure pieces (the critic network's shape, the distance, the penalty, the critic's objective, the
embedding the reward head reads) and the registered objective; the stateful critic (its weights, its optimizer and
its random stream, checkpointed, kept identical across processes) is `alignment.trainers.domain_critic.DomainCritic`.
Written here rather than taken from the official code's dependency, the `da` package (PyPI `da` 0.0.2, CPJKU), which
pins torch 1.10 / numpy 1.21 and keeps the critic as hidden module state: the formulas below are transcribed from its
`wdgrl.py` and `base.py` and tested against that transcription.

Paper vs code (followed: the code, ``github.com/portal-cornell/dial`` ``src/dial/loss.py::
domain_adaptation_contrastive_loss``, ``configs/wdgrl_hundredth.json`` and ``da`` 0.0.2 ``wdgrl.py``/``base.py``; of
the paper only the abstract and introduction were reachable here):

* defaults are the released config: lambda (``weight``) 0.01, 3 critic steps per batch, penalty weight 1.0, critic
  Adam lr 1e-4 with (L2, not decoupled) weight decay 1e-3, critic layers 256 -> 128 -> 1;
* the released config asks for ``"act_function": "gelu"``, which the ``da`` package does not know
  (`get_activation` returns None for it): the released critic has **no activation**, a stack of linear layers, i.e. a
  linear critic. ``critic_activation: none`` (the default) reproduces that; ``relu``/``gelu``/``tanh``/``leaky_relu``
  give the MLP the paper's text implies;
* the code applies ``model.noise_layer`` to the embeddings, an attribute the released `Model` never defines (the
  released DIAL path would raise AttributeError); taken as the identity here;
* embeddings: the code's ``select_last_token_hidden_state`` takes the position before the first pad token of a
  right-padded batch; here the position the sequence-classification head itself scores (transformers' last non-pad
  token, which also works with left padding). Same position for right-padded batches without inner pad tokens;
* batches: the code draws a source batch and a target batch of equal size each step; here source and target pairs
  come from one dataset (a `domain` column, e.g. a `share_mixture` whose target entries carry `domain:` labels) and
  a micro-batch holds whatever mix the sampler gives; a micro-batch without both kinds has W = 0 and no critic step
  on that process (the code's rule for a one-domain batch);
* several processes: the code wraps the critic in DDP (gradients averaged across processes); here the critic's
  gradients are averaged across the processes that had both kinds of pair (`DomainCritic`), so every process keeps
  the same critic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..registry import require_in_range
from .registry import REWARD_INVARIANCE

CRITIC_ACTIVATIONS = {"none": None, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}


def build_critic(input_size: int, *, layers: Sequence[int] = (256, 128), activation: str = "none") -> nn.Sequential:
    """The critic ``f: [N, input_size] -> [N, 1]``: Linear(input, l_0) [act], Linear(l_i, l_i+1) [act], ...,
    Linear(l_last, 1) (the ``da`` package's `DANetworks` layout; no layers: one Linear(input, 1))."""
    if activation not in CRITIC_ACTIVATIONS:
        raise ValueError(f"critic_activation must be one of {sorted(CRITIC_ACTIVATIONS)}, got {activation!r}.")
    act = CRITIC_ACTIVATIONS[activation]
    widths = [int(input_size), *[int(w) for w in layers]]
    modules: list[nn.Module] = []
    for a, b in zip(widths, widths[1:]):
        modules.append(nn.Linear(a, b))
        if act is not None:
            modules.append(act())
    modules.append(nn.Linear(widths[-1], 1))
    return nn.Sequential(*modules)


def wasserstein_estimate(critic_source: Tensor, critic_target: Tensor) -> Tensor:
    """``W = mean f(S) - mean f(T)``, the critic's estimate of the Wasserstein-1 distance (Kantorovich-Rubinstein dual,
    for a 1-Lipschitz ``f``). ``critic_source`` ``[Ns, 1]``, ``critic_target`` ``[Nt, 1]`` -> scalar."""
    return critic_source.mean() - critic_target.mean()


def gradient_penalty(critic: nn.Module, source: Tensor, target: Tensor, *, alpha: Tensor) -> Tensor:
    """WGAN-GP's penalty as the ``da`` package computes it (``wdgrl.py::gradient_penalty``).

    Both sets are tiled to ``N = Ns + Nt`` rows; ``z = s + alpha * (t - s)`` row by row, and the penalty is taken on
    ``[z; s; t]``: ``GP = mean_rows (||grad_z f(z)||_2 - 1)^2`` (``create_graph``: differentiable in the critic).

    Args:
        source: ``[Ns, H]``, target: ``[Nt, H]`` embeddings (detached).
        alpha: ``[Ns + Nt, 1]`` uniform(0, 1) draws (the caller owns the random stream).
    """
    n = source.shape[0] + target.shape[0]
    src = torch.cat([source] * (n // source.shape[0] + 1), dim=0)[:n]
    tgt = torch.cat([target] * (n // target.shape[0] + 1), dim=0)[:n]
    interpolates = src + alpha * (tgt - src)
    points = torch.cat([interpolates, src, tgt]).requires_grad_()
    values = critic(points)
    (gradients,) = torch.autograd.grad(values, points, grad_outputs=torch.ones_like(values), create_graph=True)
    return ((gradients.norm(2, dim=1) - 1) ** 2).mean()


def critic_objective(critic: nn.Module, source: Tensor, target: Tensor, *, gradient_penalty_weight: float,
                     alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The critic's loss ``-W + gradient_penalty_weight * GP`` (minimised by the critic's optimizer), with ``W`` and
    ``GP``. ``source`` ``[Ns, H]`` and ``target`` ``[Nt, H]``: detached embeddings; ``alpha``: as in
    `gradient_penalty`."""
    distance = wasserstein_estimate(critic(source), critic(target))
    penalty = gradient_penalty(critic, source, target, alpha=alpha)
    return -distance + gradient_penalty_weight * penalty, distance, penalty


def scored_positions(input_ids: Tensor, pad_token_id: int | None) -> Tensor:
    """``[B]`` index of the token a sequence-classification head scores: the last non-pad token (transformers'
    rule, right or left padding); the last position when there is no pad token."""
    if pad_token_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, dtype=torch.long, device=input_ids.device)
    not_pad = (input_ids != pad_token_id).int()
    positions = torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.int32)
    return (positions * not_pad).argmax(-1).long()


def scored_embeddings(hidden_states: Tensor, input_ids: Tensor, pad_token_id: int | None) -> Tensor:
    """``[B, T, H]`` last-layer hidden states -> ``[B, H]`` at the scored token (what the reward head reads)."""
    rows = torch.arange(hidden_states.shape[0], device=hidden_states.device)
    return hidden_states[rows, scored_positions(input_ids, pad_token_id).to(hidden_states.device)]


def _check_target_domains(target_domains: Sequence[str]) -> None:
    if (isinstance(target_domains, (str, bytes)) or not isinstance(target_domains, Sequence) or not target_domains
            or not all(isinstance(name, str) and name for name in target_domains)):
        raise ValueError("`reward_invariance_kwargs.target_domains` must be a non-empty list of `domain` names (the "
                         "domains whose pairs are unlabelled target data, e.g. [korean]), got "
                         f"{target_domains!r}.")
    if len(set(target_domains)) != len(target_domains):
        raise ValueError(f"`reward_invariance_kwargs.target_domains` lists a domain twice: {list(target_domains)}.")


def _check_positive_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`reward_invariance_kwargs.{name}` must be an integer >= {minimum}, got {value!r}.")


@REWARD_INVARIANCE.register("dial", inputs=("critic_source", "critic_target"), critic=True)
def dial(*, critic_source: Tensor, critic_target: Tensor, step: int = 0, target_domains: Sequence[str],
         weight: float = 0.01, critic_layers: Sequence[int] = (256, 128), critic_activation: str = "none",
         critic_iterations: int = 3, gradient_penalty: float = 1.0, critic_lr: float = 1e-4,
         critic_weight_decay: float = 1e-3) -> Tensor:
    """DIAL: source Bradley-Terry + weight * a Wasserstein critic's source-target distance (arXiv 2501.00911).

    Returns the domain loss ``weight * (mean f(e_S) - mean f(e_T))`` (WDGRL's feature loss); the trainer adds it to
    the source pairs' Bradley-Terry loss.

    Args:
        critic_source: ``[Ns, 1]`` critic values of the source completions' embeddings (differentiable in them).
        critic_target: ``[Nt, 1]`` the same for the target completions.
        step: the optimizer step (unused: the released config has no schedule).
        target_domains: the `domain` values whose pairs are unlabelled target data (left out of the Bradley-Terry
            loss, used only through their embeddings). Required.
        weight: lambda (the code's ``da_lambda``), >= 0; 0 trains the critic but adds nothing to the loss.
        critic_layers: hidden widths of the critic (`build_critic`).
        critic_activation: the critic's activation; ``none`` = the released code's (linear) critic.
        critic_iterations: critic Adam steps per micro-batch (``critic_iter``), >= 1.
        gradient_penalty: weight of the WGAN-GP penalty in the critic's loss (``gp_da_lambda``), >= 0.
        critic_lr, critic_weight_decay: the critic's `torch.optim.Adam` (L2 weight decay, as the code's).

    Returns:
        scalar, added by the trainer to the source pairs' Bradley-Terry loss.
    """
    _check_target_domains(target_domains)
    require_in_range("reward_invariance_kwargs.weight", weight, 0.0, float("inf"))
    require_in_range("reward_invariance_kwargs.gradient_penalty", gradient_penalty, 0.0, float("inf"))
    require_in_range("reward_invariance_kwargs.critic_weight_decay", critic_weight_decay, 0.0, float("inf"))
    if isinstance(critic_lr, bool) or not isinstance(critic_lr, (int, float)) or not critic_lr > 0:
        raise ValueError(f"`reward_invariance_kwargs.critic_lr` must be a number > 0, got {critic_lr!r}.")
    _check_positive_int("critic_iterations", critic_iterations, 1)
    if isinstance(critic_layers, (str, bytes)) or not isinstance(critic_layers, Sequence):
        raise ValueError(f"`reward_invariance_kwargs.critic_layers` must be a list of widths, got {critic_layers!r}.")
    for width in critic_layers:
        _check_positive_int("critic_layers[...]", width, 1)
    if critic_activation not in CRITIC_ACTIVATIONS:
        raise ValueError(f"`reward_invariance_kwargs.critic_activation` must be one of {sorted(CRITIC_ACTIVATIONS)}, "
                         f"got {critic_activation!r}.")
    return weight * wasserstein_estimate(critic_source, critic_target)


__all__ = ["CRITIC_ACTIVATIONS", "build_critic", "wasserstein_estimate", "gradient_penalty", "critic_objective",
           "scored_positions", "scored_embeddings", "dial"]
