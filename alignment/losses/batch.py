"""The tensor bundle every preference loss receives."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PreferenceBatch:
    """Per-token log-probabilities of a batch of preference pairs, for the policy and the reference model.

    Shapes: ``B`` pairs, ``T`` completion positions (chosen and rejected may use different ``T``).

    Attributes:
        chosen_logps: ``[B, T]`` policy log-prob of each chosen-completion token, zero outside the completion.
        rejected_logps: ``[B, T]`` the same for the rejected completion.
        ref_chosen_logps: ``[B, T]`` reference-model log-probs of the chosen tokens (no gradient); None (with
            ``ref_rejected_logps``) for reference-free losses, when no reference model is run.
        ref_rejected_logps: ``[B, T]`` reference-model log-probs of the rejected tokens (no gradient), or None.
        chosen_mask: ``[B, T]`` 1 on chosen-completion tokens, 0 on prompt and padding.
        rejected_mask: ``[B, T]`` 1 on rejected-completion tokens.
        margin: optional ``[B]`` external score margin of the pair (e.g. a reward model's r(chosen) - r(rejected)).
        weight: optional ``[B]`` per-example weight; ``compute_preference_loss`` multiplies it into any loss.
        domain: optional ``[B]`` integer domain id of each pair.
        chosen_token_weight: optional ``[B, T]`` weight of each chosen token's log-ratio (token-level methods such as
            SparsePO masks or TLDR weights). Every sequence sum below is weighted by it, so token weights compose
            with any sequence-level loss; all-ones weights reproduce the unweighted loss exactly.
        rejected_token_weight: optional ``[B, T]``, the same for the rejected tokens.
        chosen_log_sum_sq_probs: optional ``[B, T]`` policy ``log Σ_v π_θ(v | x, y_<t)²`` at each chosen-completion
            position (TRL fused-LM-head output ``log_sum_sq_probs``; used by WPO), zero outside the completion.
        rejected_log_sum_sq_probs: optional ``[B, T]``, the same for the rejected completion.
        empty_trace: optional ``[B]``, 1 where the pair is an empty-reasoning-trace pair and 0 where it is a pair with
            sampled reasoning traces (BVPO's two estimators; dataset column ``empty_trace``).
        preference_prob: optional ``[B]`` empirical probability that the chosen response is preferred (e.g. the
            fraction of annotators who preferred it; dataset column ``preference_prob``). Used by iREPO.
        round_chosen_logps: optional ``[B]`` log-prob of the chosen response (sum over its completion tokens) under
            the policy that sampled the pair, π_t of an on-policy round (dataset column written by the pair generator
            with ``record_policy_logps``). Used by INPO.
        round_rejected_logps: optional ``[B]``, the same for the rejected response.
        chosen_turn_ids: optional ``[B, T]`` long, the assistant-turn index (0, 1, ...) of each chosen-completion token
            of a multi-turn completion, −1 on tokens outside any assistant turn (prompt, padding, other roles' turns
            inside the completion, assistant headers); see `alignment.losses.turns`. Used by DMPO.
        rejected_turn_ids: optional ``[B, T]`` long, the same for the rejected completion.
        chosen_token_kl: optional ``[B, T]`` exact per-token ``KL(π_ref ‖ π_θ) = Σ_v π_ref(v|·)[log π_ref(v|·) −
            log π_θ(v|·)]`` at each chosen-completion position (over the whole vocabulary, with gradient through π_θ),
            zero outside the completion. Used by SparsePO.
        rejected_token_kl: optional ``[B, T]``, the same for the rejected completion.
        chosen_reward_mask: optional ``[B, T]`` non-negative SparsePO reward mask ``m^u`` of each chosen token.
        rejected_reward_mask: optional ``[B, T]``, the same for the rejected completion.
        chosen_kl_mask: optional ``[B, T]`` non-negative SparsePO divergence mask ``m^d`` of each chosen token (the
            same tensor as ``chosen_reward_mask`` when one mask is shared).
        rejected_kl_mask: optional ``[B, T]``, the same for the rejected completion.
        columns: ``{name: [B]}`` the per-example dataset columns declared with
            `alignment.losses.register_preference_column` (no dedicated field), present where the dataset has them;
            a loss that requires one reads ``batch.columns[name]``. The built-in columns above keep their own fields.
    """

    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    ref_chosen_logps: torch.Tensor | None
    ref_rejected_logps: torch.Tensor | None
    chosen_mask: torch.Tensor
    rejected_mask: torch.Tensor
    margin: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    domain: torch.Tensor | None = None
    chosen_token_weight: torch.Tensor | None = None
    rejected_token_weight: torch.Tensor | None = None
    chosen_log_sum_sq_probs: torch.Tensor | None = None
    rejected_log_sum_sq_probs: torch.Tensor | None = None
    empty_trace: torch.Tensor | None = None
    preference_prob: torch.Tensor | None = None
    round_chosen_logps: torch.Tensor | None = None
    round_rejected_logps: torch.Tensor | None = None
    chosen_turn_ids: torch.Tensor | None = None
    rejected_turn_ids: torch.Tensor | None = None
    chosen_token_kl: torch.Tensor | None = None
    rejected_token_kl: torch.Tensor | None = None
    chosen_reward_mask: torch.Tensor | None = None
    rejected_reward_mask: torch.Tensor | None = None
    chosen_kl_mask: torch.Tensor | None = None
    rejected_kl_mask: torch.Tensor | None = None
    columns: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        if (self.ref_chosen_logps is None) != (self.ref_rejected_logps is None):
            raise ValueError("PreferenceBatch: `ref_chosen_logps` and `ref_rejected_logps` must both be set or both "
                             "be None (reference-free).")
        for side in ("chosen", "rejected"):
            logps = getattr(self, f"{side}_logps")
            ref = getattr(self, f"ref_{side}_logps")
            ref = logps if ref is None else ref
            mask = getattr(self, f"{side}_mask")
            if logps.dim() != 2 or logps.shape != ref.shape or logps.shape != mask.shape:
                raise ValueError(
                    f"PreferenceBatch: `{side}_logps` {tuple(logps.shape)}, `ref_{side}_logps` {tuple(ref.shape)} and "
                    f"`{side}_mask` {tuple(mask.shape)} must all have the same [B, T] shape."
                )
        for side in ("chosen", "rejected"):
            mask = getattr(self, f"{side}_mask")
            for kind in ("token_weight", "log_sum_sq_probs", "turn_ids", "token_kl", "reward_mask", "kl_mask"):
                value = getattr(self, f"{side}_{kind}")
                if value is not None and value.shape != mask.shape:
                    raise ValueError(
                        f"PreferenceBatch: `{side}_{kind}` {tuple(value.shape)} must match `{side}_mask` "
                        f"{tuple(mask.shape)}."
                    )
        if self.chosen_logps.size(0) != self.rejected_logps.size(0):
            raise ValueError(
                f"PreferenceBatch: {self.chosen_logps.size(0)} chosen rows but {self.rejected_logps.size(0)} rejected rows."
            )
        batch_size = self.chosen_logps.size(0)
        for name in ("margin", "weight", "domain", "empty_trace", "preference_prob", "round_chosen_logps",
                     "round_rejected_logps"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (batch_size,):
                raise ValueError(f"PreferenceBatch: `{name}` must have shape [{batch_size}], got {tuple(value.shape)}.")
        for name, value in self.columns.items():
            if tuple(value.shape) != (batch_size,):
                raise ValueError(f"PreferenceBatch: `columns[{name!r}]` must have shape [{batch_size}], got "
                                 f"{tuple(value.shape)}.")

    @property
    def batch_size(self) -> int:
        return self.chosen_logps.size(0)

    # Sequence sums: the log-prob of a whole completion, ℓ(y|x) = Σ_t w_t log π(y_t | x, y_<t), with w_t the token
    # weight where one is set and the completion mask otherwise.
    @property
    def chosen_token_scale(self) -> torch.Tensor:
        """``[B, T]`` factor applied to every chosen token: mask × token weight."""
        if self.chosen_token_weight is None:
            return self.chosen_mask
        return self.chosen_mask * self.chosen_token_weight

    @property
    def rejected_token_scale(self) -> torch.Tensor:
        if self.rejected_token_weight is None:
            return self.rejected_mask
        return self.rejected_mask * self.rejected_token_weight

    @property
    def chosen_logps_sum(self) -> torch.Tensor:
        return (self.chosen_logps * self.chosen_token_scale).sum(-1)

    @property
    def rejected_logps_sum(self) -> torch.Tensor:
        return (self.rejected_logps * self.rejected_token_scale).sum(-1)

    @property
    def ref_chosen_logps_sum(self) -> torch.Tensor:
        return (self._ref("chosen") * self.chosen_token_scale).sum(-1)

    @property
    def ref_rejected_logps_sum(self) -> torch.Tensor:
        return (self._ref("rejected") * self.rejected_token_scale).sum(-1)

    def _ref(self, side: str) -> torch.Tensor:
        ref = getattr(self, f"ref_{side}_logps")
        if ref is None:  # a reference-free batch: reading the reference is a bug in the loss, not a zero reference
            raise ValueError(f"PreferenceBatch has no reference log-probs (`ref_{side}_logps` is None): it was built "
                             "for reference-free losses only.")
        return ref

    @property
    def chosen_lengths(self) -> torch.Tensor:
        return self.chosen_mask.sum(-1)

    @property
    def rejected_lengths(self) -> torch.Tensor:
        return self.rejected_mask.sum(-1)

    # Log-ratios against the reference, ℓ_θ(y) − ℓ_ref(y): DPO's implicit reward divided by β.
    @property
    def chosen_logratios(self) -> torch.Tensor:
        return self.chosen_logps_sum - self.ref_chosen_logps_sum

    @property
    def rejected_logratios(self) -> torch.Tensor:
        return self.rejected_logps_sum - self.ref_rejected_logps_sum

    @property
    def logratio_margin(self) -> torch.Tensor:
        """``h = [ℓ_θ(y_w) − ℓ_ref(y_w)] − [ℓ_θ(y_l) − ℓ_ref(y_l)]``, shape ``[B]``."""
        return self.chosen_logratios - self.rejected_logratios

    @classmethod
    def from_sequence_logps(
        cls,
        chosen_logps: torch.Tensor,
        rejected_logps: torch.Tensor,
        ref_chosen_logps: torch.Tensor,
        ref_rejected_logps: torch.Tensor,
        **extras,
    ) -> "PreferenceBatch":
        """A batch whose completions are one token long, carrying the given ``[B]`` sequence log-probs.

        Convenient for tests and for callers that only have sequence sums; token-level losses see one token per pair.
        """
        ones = torch.ones_like(chosen_logps).unsqueeze(-1)
        return cls(
            chosen_logps=chosen_logps.unsqueeze(-1),
            rejected_logps=rejected_logps.unsqueeze(-1),
            ref_chosen_logps=ref_chosen_logps.unsqueeze(-1),
            ref_rejected_logps=ref_rejected_logps.unsqueeze(-1),
            chosen_mask=ones,
            rejected_mask=ones.clone(),
            **extras,
        )
