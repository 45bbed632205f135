"""Per-completion mean token log-probs of the policy that sampled a GRPO batch (DRPO's negative-side scores)."""

from __future__ import annotations

import torch
from trl.models.utils import disable_gradient_checkpointing


def completion_mean_logps(trainer, output: dict) -> torch.Tensor:
    """``(1/|o_i|) Σ_t log π_old(o_{i,t})`` for every completion of the generation batch, gathered over processes.

    ``output`` is what TRL's ``_generate_and_score_completions`` returns for this process. TRL keeps the sampling
    policy's per-token log-probs there (``old_per_token_logps``) only when a batch is trained on after the policy
    moved (``num_iterations > 1``, misaligned ``steps_per_generation``, vLLM importance sampling); otherwise they equal
    the current ones and TRL skips them, so this runs the one no-grad forward TRL would have run. ``|o_i|`` counts the
    loss tokens (``completion_mask`` times ``tool_mask``), the tokens the per-sequence mean of ``loss_type: grpo``
    divides by. Multimodal inputs are not forwarded (text-only models). Returns ``[N]`` in the gathered order of the
    rewards.
    """
    mask = output["completion_mask"]
    if "tool_mask" in output:
        mask = mask * output["tool_mask"]
    per_token = output.get("old_per_token_logps")
    if per_token is None:
        completion_ids = output["completion_ids"]
        args = trainer.args
        batch_size = args.per_device_train_batch_size if trainer.model.training else args.per_device_eval_batch_size
        # Same context as TRL's own old-log-prob pass (checkpointing off: no backward follows).
        with torch.no_grad(), disable_gradient_checkpointing(trainer.model, args.gradient_checkpointing_kwargs):
            per_token, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model,
                torch.cat([output["prompt_ids"], completion_ids], dim=1),
                torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1),
                completion_ids.size(1),
                batch_size=batch_size,
            )
    mask = mask.to(per_token.dtype)
    means = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return trainer.accelerator.gather(means.detach())
