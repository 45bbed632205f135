"""BCO: binary classifier optimisation, pairwise form (``bco_pair``), with the paper's reward shift as an option."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .batch import PreferenceBatch
from .registry import LossState, register_preference_loss, require_positive


def _update_reward_shift(state: LossState, rewards: torch.Tensor) -> torch.Tensor:
    """Running mean δ of the per-step mean reward, including this step (updated in training only); returns δ."""
    buffers = state.scalar_buffers(("reward_shift", "num_updates"), rewards.device)
    if state.training:
        with torch.no_grad():
            # One value per rank (its batch mean), as TRL's RunningMoments.update of a scalar across processes.
            per_rank = state.gather(rewards.detach().float().mean().reshape(1))
            total = buffers["num_updates"] + per_rank.numel()
            buffers["reward_shift"].add_((per_rank.mean() - buffers["reward_shift"]) * per_rank.numel() / total)
            buffers["num_updates"].copy_(total)
    return buffers["reward_shift"]


@register_preference_loss("bco_pair")
def bco_pair_loss(
    batch: PreferenceBatch, *, state: LossState, beta: float = 0.1, reward_shift: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BCO (Jung et al., arXiv 2404.04656) on paired data: chosen as class 1, rejected as class 0.

    ``L = −log σ(β·r_w − δ) − log σ(−(β·r_l − δ))`` with ``r = ℓ_θ(y) − ℓ_ref(y)``. Shapes: ``[B]`` out. ``beta``
    (default 0.1, TRL's) must be > 0.

    ``reward_shift=False`` (default): δ = 0, exactly TRL 1.16's ``loss_type="bco_pair"``.
    ``reward_shift=True``: δ is the paper's reward shift, the running mean over training steps of each step's mean
    reward ``mean(β·r_w ∪ β·r_l)`` (the current step included, no gradient), as TRL's ``bco_pair`` computed it with
    ``RunningMoments`` before 1.x. Multi-rank: each rank's batch mean counts once per step (``state.gather``), as
    TRL's cross-process ``RunningMoments`` did. δ is kept in ``state`` and checkpointed; it is updated only in
    training (old TRL also updated it on eval batches).

    Paper vs code: the paper's BCO also reweights unpaired data by density ratios (its underlying-distribution
    matching); that is not part of this paired loss. TRL 1.16 dropped δ (and its ``BCOTrainer``), hence the default.

    Metric (with ``reward_shift``): ``bco_pair/reward_shift`` (δ used at this step).
    """
    require_positive("beta", beta)
    chosen = beta * batch.chosen_logratios
    rejected = beta * batch.rejected_logratios
    if not reward_shift:
        return -F.logsigmoid(chosen) - F.logsigmoid(-rejected), {}
    delta = _update_reward_shift(state, torch.cat([chosen, rejected]))
    losses = -F.logsigmoid(chosen - delta.to(chosen.dtype)) - F.logsigmoid(-(rejected - delta.to(rejected.dtype)))
    return losses, {"bco_pair/reward_shift": delta.clone()}
