"""Registry of unpaired preference losses: pure functions on per-example log-ratios and desirable/undesirable labels.

Unpaired data (TRL's ``prompt`` / ``completion`` / ``label`` layout) has one completion per row and a bool saying
whether it is desirable; there is no chosen/rejected pair, so these losses do not fit `alignment.losses`
(`PreferenceBatch` is paired: every row has both sides). A loss is registered with::

    @UNPAIRED_LOSSES.register("name")
    def my_loss(logratios, labels, *, reference_point, beta: float = 0.1, ...) -> Tensor:
        ...  # the weighted per-example loss [B]

``logratios`` [B] is ``log π_θ(y|x) − log π_ref(y|x)`` summed over the completion, ``labels`` [B] bool (True =
desirable). ``reference_point`` (a scalar, detached) is the only per-call input: a loss that declares it gets KTO's
KL estimate z_ref (`kl_reference_point`), and the trainer runs the extra forward passes on mismatched (prompt,
completion) pairs only for such a loss. Every other keyword-only parameter is a hyper-parameter; ``beta``,
``desirable_weight`` and ``undesirable_weight`` come from TRL's `KTOConfig` fields of the same names, the others from
the recipe's ``loss_kwargs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..registry import Registry, Spec, require_in_range

# Hyper-parameters that are fields of TRL's KTOConfig (and so of the recipe) rather than `loss_kwargs` entries.
CONFIG_HPARAMS = ("beta", "desirable_weight", "undesirable_weight")


@dataclass(frozen=True)
class UnpairedLossSpec(Spec):
    @property
    def uses_reference_point(self) -> bool:
        """Whether the loss takes z_ref, i.e. whether the trainer must estimate it (read from the signature)."""
        return "reference_point" in self.inputs


def _dummy_call(spec: UnpairedLossSpec, hparams: dict[str, Any]) -> None:
    # one call on a two-row batch, so the loss's own value checks run at start-up instead of at the first step
    inputs = {"reference_point": torch.zeros(())} if spec.uses_reference_point else {}
    spec.fn(torch.zeros(2), torch.tensor([True, False]), **inputs, **hparams)


UNPAIRED_LOSSES: Registry[UnpairedLossSpec] = Registry("unpaired loss_type", UnpairedLossSpec,
                                                       inputs=("reference_point",), validator=_dummy_call)


def resolve_unpaired_loss(config) -> tuple[UnpairedLossSpec, dict[str, Any]]:
    """The spec and hyper-parameters of ``config.loss_type`` (a `KTOConfig`): ``beta`` / ``desirable_weight`` /
    ``undesirable_weight`` from the config's fields when the loss takes them, the rest from ``config.loss_kwargs``;
    validated (names, then values), so a bad recipe fails before any model is loaded."""
    spec = UNPAIRED_LOSSES.get(config.loss_type)
    hparams = {name: getattr(config, name) for name in CONFIG_HPARAMS if name in spec.accepted_hparams}
    hparams.update(getattr(config, "loss_kwargs", None) or {})
    UNPAIRED_LOSSES.validate(config.loss_type, **hparams)
    return spec, hparams


def by_label(labels: torch.Tensor, desirable: torch.Tensor, undesirable: torch.Tensor, *, desirable_weight: float,
             undesirable_weight: float) -> torch.Tensor:
    """``λ_D · desirable`` where ``labels`` is True, ``λ_U · undesirable`` elsewhere; all [B]. Both sides are computed
    for every row and one is selected, so the gradient of the unselected side is exactly zero."""
    require_in_range("desirable_weight", desirable_weight, 0.0, float("inf"))
    require_in_range("undesirable_weight", undesirable_weight, 0.0, float("inf"))
    return torch.where(labels.bool(), desirable_weight * desirable, undesirable_weight * undesirable)


def kl_reference_point(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor, *,
                       gather: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> torch.Tensor:
    """KTO's reference point z_ref = max(0, mean KL estimate), detached; a scalar.

    ``policy_kl_logps`` / ``reference_kl_logps`` [B]: summed log-probs of *mismatched* (prompt, completion) pairs
    (TRL rotates the completions by one within each batch: x_i with y_{i-1}). Their difference is a one-sample estimate
    of KL(π_θ(·|x) ‖ π_ref(·|x)) per row. As TRL 1.16 does: the mean over this process's rows, then ``gather`` (the
    trainer passes ``accelerator.gather_for_metrics``) and the mean of the per-process means, then the clamp at 0.
    HALOs sums the per-row estimates over all ranks and divides by the number of non-empty rows instead; the two agree
    when every process has the same number of rows and no row is empty.
    """
    kl = (policy_kl_logps - reference_kl_logps).mean().detach()
    return gather(kl).mean().clamp(min=0)
