"""SparsePO token masks (Christopoulou et al., arXiv 2410.05102): per-token weights of the reward and KL terms.

Two variants, both computed from the **reference** model (so the mask of a token does not depend on the policy):

- `mapo_mask`: activation-derived, nothing learned ("MaPO" in the paper and `mapo_trainer.py` of the official code,
  `huawei-noah/HEBO/SparsePO`). Each hooked activation is averaged over its hidden dimension, z-normalised over the
  response tokens of its sequence and min–max rescaled to [0, 1] (`zn_rescale`); the rescaled values are averaged
  over the hooks of one kind, then over kinds, and detached. One mask serves both terms (``m^u = m^d``).
- `LearnedTokenMask` / `SparseMaskHeads`: the paper's learned masks (official ``mask_model="simple_all"``, class
  ``SimpleMaskAllLayers``): a small network on the reference hidden states of every layer, trained jointly with the
  policy through the SparsePO loss; ReLU gives exact zeros, hence sparsity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# z-normalisation guard, as the official code's `+ 1e-12` on the standard deviation.
_STD_EPS = 1e-12
# `sparsepo_mask` values, and the reference activations `sparsepo_mapo_activations` may average into a MaPO mask.
MASK_KINDS = ("learned", "mapo")
MAPO_ACTIVATIONS = ("resid", "mlp", "attn", "logits")


def check_sparse_settings(*, mask: str, dropout: float, mask_weight_decay: float,
                          mapo_activations: list[str] | tuple[str, ...]) -> None:
    """Value checks of the `PreferenceConfig` SparsePO fields (run by the config itself, at parse time)."""
    if mask not in MASK_KINDS:
        raise ValueError(f"`sparsepo_mask` must be one of {MASK_KINDS}, got {mask!r}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"`sparsepo_mask_dropout` must be in [0, 1), got {dropout}.")
    if not mask_weight_decay >= 0:
        raise ValueError(f"`mask_weight_decay` must be >= 0, got {mask_weight_decay}.")
    unknown = sorted(set(mapo_activations) - set(MAPO_ACTIVATIONS))
    if unknown or not mapo_activations:
        raise ValueError(f"`sparsepo_mapo_activations` must be a non-empty list from {MAPO_ACTIVATIONS}, got "
                         f"{list(mapo_activations)}.")


def zn_rescale(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Official ``zn_rescale``: z-normalise ``values`` over the masked tokens of each row, min–max rescale to [0, 1].

    ``values``, ``mask``: ``[B, T]`` (the activation already averaged over its hidden dimension; mask 1 on response
    tokens). Per row, over the tokens where ``mask`` is 1: ``z = (v − mean) / (std + 1e-12)`` with the unbiased
    standard deviation (``torch.std``, as the official code), then ``r = (z − min z) / (max z − min z)``; returns
    ``r · mask``. The lowest response token of every row gets exactly 0 and the highest exactly 1.

    A row whose masked values are all equal (or that has one response token) has no ranking to express: it gets 1
    on its response tokens (the unmasked token, TDPO's), where the official code would produce NaN (0/0). The official
    code also rounds the statistics to float16; here they stay in the input's precision.
    """
    if values.shape != mask.shape:
        raise ValueError(f"zn_rescale: values {tuple(values.shape)} and mask {tuple(mask.shape)} must match.")
    values = values.float()
    on = mask > 0
    weight = on.to(values.dtype)
    count = weight.sum(-1, keepdim=True)
    mean = (values * weight).sum(-1, keepdim=True) / count.clamp(min=1)
    var = ((values - mean) ** 2 * weight).sum(-1, keepdim=True) / (count - 1).clamp(min=1)
    z = (values - mean) / (var.sqrt() + _STD_EPS)
    low = z.masked_fill(~on, float("inf")).amin(-1, keepdim=True)
    high = z.masked_fill(~on, float("-inf")).amax(-1, keepdim=True)
    spread = high - low
    degenerate = ~(spread > 0)  # constant row, single token, or no token at all (then ±inf)
    rescaled = (z - low) / torch.where(degenerate, torch.ones_like(spread), spread)
    rescaled = torch.where(degenerate, torch.ones_like(rescaled), rescaled)
    return rescaled * weight


def mapo_mask(activations: Mapping[str, Sequence[torch.Tensor]], mask: torch.Tensor) -> torch.Tensor:
    """The MaPO mask: ``zn_rescale`` of every hooked activation, averaged within each kind, then over kinds; detached.

    ``activations``: kind (e.g. ``"resid"``, ``"mlp"``, ``"attn"``, ``"logits"``) -> one ``[B, T]`` tensor per hook
    (layer), each already averaged over its hidden dimension. ``mask``: ``[B, T]`` response-token mask. The official
    code averages the hooks of one kind first and then the kinds, so a kind with many hooks (the residual stream) does
    not outweigh one with few (the logits); this follows it. Returns ``[B, T]`` in [0, 1], zero off the response.
    """
    per_kind = []
    for kind, tensors in activations.items():
        if not tensors:
            raise ValueError(f"mapo_mask: no activation was recorded for {kind!r}.")
        per_kind.append(torch.stack([zn_rescale(tensor, mask) for tensor in tensors]).mean(0))
    if not per_kind:
        raise ValueError("mapo_mask: `activations` is empty; name at least one activation kind.")
    return torch.stack(per_kind).mean(0).detach()


class LearnedTokenMask(nn.Module):
    """SparsePO's learned mask (official ``SimpleMaskAllLayers`` with ReLU activations), one scalar per token.

    For the reference hidden states ``H_ℓ`` of layers ``ℓ = 1..L`` (the embedding output excluded, as the official
    ``reference_states[1:]``): ``z_ℓ = Dropout(ReLU(w_ℓ · LayerNorm(H_ℓ) + b_ℓ))``, then
    ``m = Dropout(ReLU(Σ_ℓ a_ℓ z_ℓ))`` (the mixer has no bias). One LayerNorm (with affine parameters) is shared by all
    layers, as in the official code. Parameters: ``L·(H + 1) + L + 2H``.

    Args:
        hidden_size: ``H`` of the reference model.
        num_layers: ``L``, the number of hidden-state tensors the forward receives.
        dropout: dropout probability after each ReLU (official default ``mask_dropout=0.01``).
        eps: LayerNorm epsilon (the official code uses the model's own ``layer_norm_eps``).
    """

    def __init__(self, hidden_size: int, num_layers: int, dropout: float = 0.01, eps: float = 1e-5):
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"LearnedTokenMask needs hidden_size >= 1 and num_layers >= 1, got {hidden_size}, "
                             f"{num_layers}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"LearnedTokenMask: `dropout` must be in [0, 1), got {dropout}.")
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.per_layer = nn.ModuleList([nn.Linear(hidden_size, 1) for _ in range(num_layers)])
        self.mixer = nn.Linear(num_layers, 1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """``hidden_states``: ``L`` tensors ``[..., H]`` (any leading shape) -> mask ``[...]``, non-negative."""
        if len(hidden_states) != len(self.per_layer):
            raise ValueError(f"LearnedTokenMask expects {len(self.per_layer)} hidden-state tensors (one per layer), "
                             f"got {len(hidden_states)}.")
        dtype = self.mixer.weight.dtype
        per_layer = [
            self.dropout(F.relu(linear(self.layer_norm(hidden.to(dtype)))))
            for linear, hidden in zip(self.per_layer, hidden_states, strict=True)
        ]
        return self.dropout(F.relu(self.mixer(torch.cat(per_layer, dim=-1)))).squeeze(-1)


class SparseMaskHeads(nn.Module):
    """The learned masks of SparsePO: one `LearnedTokenMask` shared by ``m^u`` and ``m^d`` ("sparse-common"), or two
    independent ones ("sparse-indp", official ``rw_kl_independent=True``).

    ``forward(hidden_states)`` returns ``(m^u, m^d)``; with a common mask both are the same tensor.
    """

    def __init__(self, hidden_size: int, num_layers: int, *, independent: bool = False, dropout: float = 0.01,
                 eps: float = 1e-5):
        super().__init__()
        self.reward = LearnedTokenMask(hidden_size, num_layers, dropout=dropout, eps=eps)
        self.kl = LearnedTokenMask(hidden_size, num_layers, dropout=dropout, eps=eps) if independent else None

    @property
    def independent(self) -> bool:
        return self.kl is not None

    def forward(self, hidden_states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        reward = self.reward(hidden_states)
        return reward, (self.kl(hidden_states) if self.kl is not None else reward)
