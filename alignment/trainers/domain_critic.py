"""`DomainCritic`: the Wasserstein critic a `critic=True` reward objective (`dial`) trains beside the reward model.

Stateful on purpose (the formulas are pure functions in `alignment.reward_objectives.dial`): the critic's weights,
its own `torch.optim.Adam` and the random stream of the gradient penalty's interpolation weights. All three are one
checkpoint file (per process, `ProcessStates`), so an interrupted run resumes with the critic it had.

Several processes: the critic is built from the run's seed (same weights everywhere); each critic step averages the
critic's gradients over the processes whose micro-batch held both source and target completions (an all-reduce of
the gradients and of that count), so every process takes the same step and the critics stay identical — what the
official code gets from wrapping the critic in DDP, without DDP's deadlock when one process has a one-domain batch.
The interpolation weights are drawn per process (seed + rank): each process's penalty is its own Monte Carlo sample.
The critic always runs in float32, outside autocast (its penalty differentiates through its own gradient).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..reward_objectives.dial import build_critic, critic_objective

DOMAIN_CRITIC_FILE = "domain_critic.pt"
# The objective's hyper-parameters `DomainCritic` takes (a critic objective such as `dial` declares all of them).
CRITIC_SETTINGS = ("critic_layers", "critic_activation", "critic_iterations", "gradient_penalty", "critic_lr",
                   "critic_weight_decay")


class DomainCritic:
    """A critic ``f: [N, H] -> [N, 1]`` with its Adam optimizer (see the module docstring).

    Args:
        hidden_size: ``H``, the reward model's hidden size.
        seed: the run's seed (weights) and, plus ``rank``, the interpolation stream.
        rank: this process's index.
        device: where the embeddings live.
        critic_layers, critic_activation, critic_iterations, gradient_penalty, critic_lr, critic_weight_decay: the
            objective's hyper-parameters (`alignment.reward_objectives.dial.dial`).
    """

    def __init__(self, hidden_size: int, *, seed: int, rank: int = 0, device: torch.device | str = "cpu",
                 critic_layers: Sequence[int] = (256, 128), critic_activation: str = "none",
                 critic_iterations: int = 3, gradient_penalty: float = 1.0, critic_lr: float = 1e-4,
                 critic_weight_decay: float = 1e-3):
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):  # the same weights on every process; the global stream untouched
            torch.manual_seed(seed)
            self.net = build_critic(hidden_size, layers=critic_layers, activation=critic_activation)
        self.net.to(self.device, torch.float32)
        for param in self.net.parameters():  # a process without a step still all-reduces (zero) gradients
            param.grad = torch.zeros_like(param)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=critic_lr, weight_decay=critic_weight_decay)
        self.iterations = critic_iterations
        self.gradient_penalty = gradient_penalty
        self.generator = torch.Generator(device="cpu").manual_seed(seed + 1_000_003 * (rank + 1))

    def values(self, embeddings: Tensor) -> Tensor:
        """``[N, H] -> [N, 1]`` critic values, differentiable in ``embeddings`` only (the critic's own parameters get
        no gradient from the reward model's loss)."""
        with torch.autocast(device_type=self.device.type, enabled=False):
            for param in self.net.parameters():
                param.requires_grad_(False)
            try:
                return self.net(embeddings.float())
            finally:
                for param in self.net.parameters():
                    param.requires_grad_(True)

    def update(self, source: Tensor | None, target: Tensor | None) -> dict[str, float]:
        """``critic_iterations`` Adam steps on ``-W + gradient_penalty * GP`` over detached ``source`` ``[Ns, H]`` and
        ``target`` ``[Nt, H]`` embeddings (``None`` or empty: this process has no pair of that kind; it still joins
        the all-reduce). Returns this process's mean ``W`` and ``GP`` over the steps (empty when it had no step)."""
        has_both = source is not None and target is not None and source.shape[0] > 0 and target.shape[0] > 0
        if has_both:
            source, target = source.detach().float(), target.detach().float()
        distances, penalties = [], []
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        for _ in range(self.iterations):
            self.optimizer.zero_grad(set_to_none=False)
            if has_both:
                alpha = torch.rand((source.shape[0] + target.shape[0], 1), generator=self.generator).to(source.device)
                with torch.autocast(device_type=self.device.type, enabled=False):
                    loss, distance, penalty = critic_objective(self.net, source, target,
                                                               gradient_penalty_weight=self.gradient_penalty,
                                                               alpha=alpha)
                loss.backward()
                distances.append(distance.item())
                penalties.append(penalty.item())
            contributors = 1.0 if has_both else 0.0
            if distributed:
                count = torch.tensor([contributors], device=self.device)
                dist.all_reduce(count)
                contributors = float(count.item())
                for param in self.net.parameters():
                    dist.all_reduce(param.grad)
            if contributors == 0:
                break  # no process had both kinds: no step anywhere
            if contributors > 1:
                for param in self.net.parameters():
                    param.grad.div_(contributors)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)  # nothing of the critic's own steps is left in .grad
        if not distances:
            return {}
        return {"critic_distance": sum(distances) / len(distances),
                "critic_gradient_penalty": sum(penalties) / len(penalties)}

    # ------------------------------------------------------------ checkpoint (`ProcessStates` holder)
    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
