"""HAPO's adaptive temperature sampling: a per-token temperature from the entropy of the next-token distribution.

HAPO (Liu et al., "Heterogeneous Adaptive Policy Optimization", arXiv 2509.16591; official code
`starriver030515/HAPO`, `vllm/v1/sample/sampler.py` ``compute_entropy_based_temperature``, statistics from
`verl/trainer/ppo/ray_trainer.py` -> `core_algos.compute_entropy_h`):

    T_t = T * (1 + tau * clip(h_hat_t, -1, 1)),        tau = 0.05 (`temperature_tau`)

where h_hat_t is the entropy of the next-token distribution at that position normalised with the statistics
(pivot quantile q, std, positive / negative scales: `alignment.policy_losses.hapo.EntropyStatistics`) of the
*previous* training step's rollout, the same normalisation as the loss side (`normalized_entropy`). Without
statistics (the first step) T_t = T. High-entropy positions (forks) are sampled hotter, low-entropy ones colder.

Paper vs code, and where we differ from the code:

- Sign of the low-entropy side: the released normalisation divides it by ``min(h) < 0`` (every h_hat >= 0, so the
  sampler only ever *raises* the temperature); we follow the paper's signed h_hat unless the statistics were made
  with ``compat_code=True`` (the sign lives in ``neg_scale``; see `alignment.policy_losses.hapo`).
- Which distribution's entropy: the official sampler takes the entropy of the logits before the temperature, while
  its statistics are of the actor's entropies of ``logits / T`` (verl's `compute_log_prob`). We take the entropy of
  ``logits / T`` on both sides, so token and statistics are on one scale. Identical at T = 1 (every official recipe).
- Entropy floor: the official sampler clamps H at 1e-6 before the log, its statistics at 1e-8; we use 1e-8 for both.
- Where: the official code patches vLLM's sampler; here a transformers `LogitsProcessor`. transformers runs custom
  processors after its penalties and before its `TemperatureLogitsWarper` (then top-k / top-p / min-p), the same
  place as vLLM's temperature (after penalties, before min-p / top-k / top-p). The processor divides by
  ``T_t / T`` and the warper by ``T``, so the sampled distribution is ``softmax(logits / T_t)`` exactly.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from ..policy_losses.hapo import EntropyStatistics, apply_entropy_statistics


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy ``[B]`` of ``softmax(logits)`` ``[B, V]``, in float32; tokens masked to -inf (e.g. by a penalty or
    `suppress_tokens`) contribute 0 instead of NaN."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)


def hapo_temperature(logits: torch.Tensor, stats: EntropyStatistics | None, *, temperature: float,
                     tau: float) -> torch.Tensor:
    """Per-row sampling temperature ``[B]`` from next-token ``logits`` ``[B, V]`` (before any temperature).

    ``T_t = T (1 + tau clip(h_hat_t, -1, 1))`` with h_hat_t the entropy of ``softmax(logits / T)`` normalised by
    ``stats`` (`apply_entropy_statistics`); ``stats=None`` (no previous rollout) or ``tau = 0`` gives T exactly.
    """
    base = torch.full(logits.shape[:1], float(temperature), dtype=torch.float32, device=logits.device)
    if stats is None or tau == 0:
        return base
    h_hat = apply_entropy_statistics(token_entropy(logits.float() / temperature), stats)
    return base * (1.0 + tau * h_hat.clamp(-1.0, 1.0))


class HAPOTemperatureProcessor(LogitsProcessor):
    """Divides each row's scores by ``T_t / T`` (`hapo_temperature`); transformers' temperature warper, which runs
    after custom processors, then divides by T. Keeps every step's ``T_t`` ``[B]`` in ``temperatures`` (for logging).

    ``temperature`` must be the generation config's (> 0, sampling); ``tau`` in [0, 1) keeps T_t > 0.
    """

    def __init__(self, stats: EntropyStatistics | None, *, temperature: float, tau: float):
        self.stats = stats
        self.temperature = float(temperature)
        self.tau = float(tau)
        self.temperatures: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        per_row = hapo_temperature(scores, self.stats, temperature=self.temperature, tau=self.tau)
        self.temperatures.append(per_row.detach())
        return scores / (per_row / self.temperature).unsqueeze(1).to(scores.dtype)
