"""The domain weights between updates (`DomainWeightState`: current, running average, step; checkpointable) and the
check that a weight vector is a distribution over domains (`check_distribution`)."""

from __future__ import annotations

from typing import Any, Sequence

import torch

# Tolerance on Σw = 1: recipes write weights with a few decimals, and float32 sums drift by ~1e-7 per domain.
_SUM_TOL = 1e-4


def check_distribution(weights: torch.Tensor, what: str = "weights") -> None:
    """Raise a ValueError unless ``weights`` is a 1-D, finite, non-negative tensor summing to 1."""
    if not isinstance(weights, torch.Tensor) or weights.ndim != 1 or weights.numel() == 0:
        raise ValueError(f"`{what}` must be a non-empty 1-D tensor over the K domains, got {weights!r}.")
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"`{what}` must be finite and non-negative, got {weights.tolist()}.")
    total = float(weights.double().sum())
    if abs(total - 1.0) > _SUM_TOL:
        raise ValueError(f"`{what}` must sum to 1 (a distribution over domains), got sum {total:.6g}.")



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
