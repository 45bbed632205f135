"""Per-domain gradients for DoGE online (Fan, Pagliardini, Jaggi, ICML 2024, arXiv 2310.15393).

DoGE's update (`alignment.domain_rules.doge`) needs, at every optimizer step, the gradient of each training
domain's mean loss, g_i = ∇_θ (1/n_i) Σ_{x∈domain i} ℓ(x), flattened to a vector: ``grads`` [K, P].
`DomainGradients` computes them next to the normal training step without changing it:

- in ``compute_loss`` the trainer hands over the per-example loss sums *with their graph* ([B]) and the counts
  (tokens for SFT, 1 per pair for preference losses); for each domain present in the micro-batch we call
  ``torch.autograd.grad(Σ_{b∈domain} loss_sums[b], params, retain_graph=True)``. `autograd.grad` returns the
  gradients instead of accumulating them into ``.grad``, and ``retain_graph`` leaves the graph for the trainer's own
  backward, so the training gradient is exactly what it would be without DoGE (tested);
- the sums of these gradients and the counts are accumulated over the micro-batches of the optimizer step and
  summed over processes (all-reduce of [K·P + K] numbers), then divided: g_i is the gradient of domain i's mean loss
  over the whole global batch, as if computed on one process.

Parameter subset (cost). The official code (`src/trainer.py`) flattens the gradient of *every* parameter
(optionally a list of "selected modules") after one extra backward per domain. That costs K extra full backward
passes and K·|θ| memory per step. Our default is the parameters of the **last decoder block**
(`domain_doge_last_layers: 1`; chosen by `alignment.trainers.gradients.select_gradient_parameters`):
the extra backward passes then stop after the LM head, the final norm and one block, and P is one block's size.
``domain_doge_params`` (a regular expression on parameter names) selects any other subset, e.g. ``'.*'`` for the full
gradient of the official code. Only trainable parameters count (LoRA: the adapters). Inner products over a subset
are an approximation of the paper's full-gradient alignment; docs/domain-reweighting.md reports the measured cost.

Absent domains: a domain with no example in the step's global batch keeps its last gradient (zeros before it was
first seen), as the official code keeps its row of ``flat_grad_mat``.
Per-domain clipping to ``max_grad_norm`` (official code) is not applied: with ``normalize=True`` (the default) the
rule divides by the mean gradient norm anyway.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .gradients import group_gradients

class DomainGradients:
    """Accumulates per-domain gradient sums over one optimizer step and turns them into ``grads`` [K, P].

    Args:
        parameters: the parameters to differentiate (`gradients.select_gradient_parameters`).
        num_domains: K.
        reduce_sum: ``tensor -> tensor`` summing a tensor over processes (``accelerator.reduce(t, "sum")``);
            identity with one process.
    """

    def __init__(self, parameters: list[torch.nn.Parameter], num_domains: int,
                 reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.parameters = list(parameters)
        self.num_domains = num_domains
        self.size = sum(p.numel() for p in self.parameters)
        self.reduce_sum = reduce_sum or (lambda tensor: tensor)
        self.last = torch.zeros(num_domains, self.size, dtype=torch.float32)  # g_i of the latest step with domain i
        self._reset()

    def _reset(self) -> None:
        self._sums: torch.Tensor | None = None  # [K, P] on the parameters' device, created at the first record
        self._counts = torch.zeros(self.num_domains, dtype=torch.float64)

    def record(self, domain_ids: torch.Tensor, loss_sums: torch.Tensor, counts: torch.Tensor | None = None) -> None:
        """Add a micro-batch: ``domain_ids`` [B], ``loss_sums`` [B] (differentiable: each example's loss, or its
        token losses summed), ``counts`` [B] (tokens, or None for 1 per example). Does not touch ``.grad``."""
        if not loss_sums.requires_grad:
            raise RuntimeError("DoGE needs the per-example losses with their graph (not detached).")
        domain_ids = domain_ids.to(loss_sums.device).long().flatten()
        counts = torch.ones_like(loss_sums) if counts is None else counts.to(loss_sums.device)
        if self._sums is None:
            self._sums = torch.zeros(self.num_domains, self.size, dtype=torch.float32,
                                     device=self.parameters[0].device)
        present = [domain for domain in domain_ids.unique().tolist() if 0 <= domain < self.num_domains]  # not eval-only
        rows = [domain_ids == domain for domain in present]
        flats = group_gradients([loss_sums[mask].sum() for mask in rows], self.parameters)  # graph kept for the step
        for domain, mask, flat in zip(present, rows, flats):
            self._sums[domain] += flat.to(self._sums.device)
            self._counts[domain] += float(counts[mask].detach().double().sum())

    def step_end(self) -> torch.Tensor:
        """Sum over processes and return ``grads`` [K, P] (float32, CPU): the gradient of each domain's mean loss
        over the step's global batch; absent domains keep their previous row. Call on every process."""
        device = self.parameters[0].device
        sums = self._sums if self._sums is not None else torch.zeros(self.num_domains, self.size, device=device)
        packed = torch.cat([sums.flatten().double(), self._counts.to(device)])
        total = self.reduce_sum(packed).cpu()
        self._reset()
        sums, counts = total[:-self.num_domains].view(self.num_domains, self.size), total[-self.num_domains:]
        present = counts > 0
        self.last[present] = (sums[present] / counts[present, None]).float()
        return self.last.clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"last": self.last.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["last"].shape != self.last.shape:
            raise ValueError(f"The checkpoint's DoGE gradients have shape {tuple(state['last'].shape)}, this run "
                             f"{tuple(self.last.shape)}: resume with the same model and `domain_doge_*` fields.")
        self.last = state["last"].clone()
