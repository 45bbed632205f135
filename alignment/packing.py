"""Padding-free ("packed") forward passes for the preference trainer.

TRL's preference collator stacks the 2B sequences of a batch as a padded ``[2B, T]`` block ([chosen; rejected], right
padding). Packing concatenates their real tokens into ONE row ``[1, L]`` (``L`` = number of non-pad tokens) with
``position_ids`` restarting at 0 for every sequence and no ``attention_mask``. transformers (>= 4.50; checked on 5.23,
``masking_utils.find_packed_sequence_indices``) then reads the sequence boundaries from the position ids and builds a
block-diagonal causal mask for eager / sdpa / flex attention; flash-attention takes the same position ids as varlen
boundaries. No pad token is ever computed, but a single row of length L with a dense mask costs O(L^2) attention
instead of O(2B * T^2) -- see docs/padding-free.md for when that pays.

Scoring is done with pre-shifted labels (TRL's fused head takes ``shift_labels`` and scores position ``p`` against
``shift_labels[p]`` with no shift of its own), built in the padded layout and then packed, so the last real token of
each sequence gets label ``-100``: the first token of sequence k+1 is never scored from sequence k's context.

The per-token outputs (``[1, L]``) are scattered back to the padded layout ``[2B, T-1]`` (position t scores token t+1,
zero where nothing is scored), exactly what the unpacked fused head returns, so the losses run unchanged.

Shapes: N = 2B sequences, T = padded length, L = total real tokens. Any padding side works (left, right, none); the
real tokens of a row must be contiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100
# Model inputs a packed forward knows how to carry; anything else (pixel values, token type ids, ...) is per-row
# padded data with no packed equivalent here, so it is refused instead of silently misaligned.
PACKABLE_KEYS = frozenset({"input_ids", "attention_mask", "use_cache", "output_router_logits"})


@dataclass(frozen=True)
class PackedSequences:
    """One padded ``[N, T]`` batch laid out as a single packed row.

    Attributes:
        mask: ``[N, T]`` bool, True at real (non-pad) tokens; the layout to scatter packed outputs back into.
        input_ids: ``[1, L]`` the real tokens, row after row.
        position_ids: ``[1, L]`` 0, 1, ... restarting at every sequence.
        shift_labels: ``[1, L]`` the label position p is scored against (the next token of the same sequence, or
            ``-100`` at a sequence's last token and wherever the padded labels were ``-100``).
    """

    mask: torch.Tensor
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    shift_labels: torch.Tensor

    @property
    def num_tokens(self) -> int:
        return self.input_ids.size(1)

    def to(self, device) -> "PackedSequences":
        return PackedSequences(*(t.to(device) for t in (self.mask, self.input_ids, self.position_ids,
                                                         self.shift_labels)))

    def unpack(self, values: torch.Tensor) -> torch.Tensor:
        """``[1, L]`` per-token values -> ``[N, T-1]`` padded, aligned like the fused head's unpacked output.

        Differentiable (``masked_scatter`` keeps the graph to ``values``); zero at pads.
        """
        if values.shape != (1, self.num_tokens):
            raise ValueError(f"expected packed values of shape (1, {self.num_tokens}), got {tuple(values.shape)}")
        padded = values.new_zeros(self.mask.shape).masked_scatter(self.mask, values[0])
        # Packed position p scores the token after it, so a sequence's values sit at its first len-1 positions: the
        # padded layout's last column only ever holds the (always -100) label of a last token.
        return padded[:, :-1]


def pack_sequences(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> PackedSequences:
    """Pack a padded batch. ``input_ids``, ``attention_mask``, ``labels``: ``[N, T]`` (labels ``-100`` = not scored).

    Raises ValueError if a row's real tokens are not contiguous (packing would join fragments of one row).
    """
    if not (input_ids.shape == attention_mask.shape == labels.shape) or input_ids.dim() != 2:
        raise ValueError(f"input_ids, attention_mask and labels must share one [N, T] shape, got "
                         f"{tuple(input_ids.shape)}, {tuple(attention_mask.shape)}, {tuple(labels.shape)}")
    mask = attention_mask.bool()
    # Contiguous <=> at most one 0->1 rise per row, counting a real first token as a rise.
    rises = (mask[:, :1].long() + (mask[:, 1:] & ~mask[:, :-1]).long().sum(1, keepdim=True))
    if (rises > 1).any():
        raise ValueError("padding_free needs each row's real tokens to be contiguous (left or right padding); the "
                         "attention mask has holes. Set `padding_free: false` for this data.")
    positions = mask.long().cumsum(1) - 1
    next_labels = labels[:, 1:].masked_fill(~mask[:, 1:], IGNORE_INDEX)
    shift_labels = torch.cat([next_labels, next_labels.new_full((labels.size(0), 1), IGNORE_INDEX)], dim=1)
    return PackedSequences(
        mask=mask,
        input_ids=input_ids[mask].unsqueeze(0),
        position_ids=positions[mask].unsqueeze(0),
        shift_labels=shift_labels[mask].unsqueeze(0),
    )


def packed_fused_forward(model, model_kwargs: dict[str, Any], packed: PackedSequences):
    """Run ``model`` (patched by TRL's `add_fused_lm_head`) on the packed row; return its `FusedCausalLMOutput` with
    every per-token field unpacked to ``[N, T-1]``, as ``model(**model_kwargs, labels=labels, fused_lm_head=True)``
    would have returned on the padded batch. ``model_kwargs`` are the padded inputs (``input_ids``,
    ``attention_mask``, ...); keys outside `PACKABLE_KEYS` are an error.
    """
    unknown = sorted(set(model_kwargs) - PACKABLE_KEYS)
    if unknown:
        raise ValueError(f"padding_free cannot pack the model inputs {unknown} (only {sorted(PACKABLE_KEYS)}); set "
                         "`padding_free: false` for this model / data.")
    kwargs = {k: v for k, v in model_kwargs.items() if k not in ("input_ids", "attention_mask")}
    outputs = model(input_ids=packed.input_ids, position_ids=packed.position_ids, shift_labels=packed.shift_labels,
                    fused_lm_head=True, **kwargs)
    for name, value in list(outputs.items()):
        if torch.is_tensor(value) and value.shape == (1, packed.num_tokens):
            outputs[name] = packed.unpack(value)
    return outputs


def check_packing_isolates(model, vocab_size: int) -> None:
    """Start-up probe: does ``model`` really isolate packed sequences and honour their ``position_ids``?

    Scores a sequence C (i) alone and padded, (ii) packed after a sequence A, (iii) packed after a different sequence
    B of the same length. Attention leaking across the boundary makes (ii) != (iii); positions ignored (absolute
    position embeddings counted from the row start) make (ii) != (i). Tolerances are on the max absolute difference of
    per-token log-probs: 1e-3 in float32 (observed ~1e-6 on sdpa/eager); in half precision 2e-2 for (ii) vs (iii),
    same shapes hence nearly the same arithmetic, and 0.25 for (ii) vs (i), whose shapes differ. A leak or a wrong
    position changes a real model's log-probs by far more. Runs without gradient, in eval mode (dropout off), on 24
    tokens.
    """
    half = next(model.parameters()).dtype in (torch.float16, torch.bfloat16)
    leak_tolerance, shift_tolerance = (2e-2, 0.25) if half else (1e-3, 1e-3)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    a, b, c = (torch.randint(0, vocab_size, (8,), generator=generator) for _ in range(3))
    c_labels = c.clone()
    c_labels[:2] = IGNORE_INDEX  # a "prompt": unscored tokens, as in a preference batch
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(input_ids=c[None].to(device), attention_mask=torch.ones(1, 8, dtype=torch.long, device=device),
                          labels=c_labels[None].to(device), fused_lm_head=True).log_probs.float()[0]
            after = []
            for first in (a, b):
                ids = torch.stack([first, c])
                labels = torch.stack([first, c_labels])
                out = packed_fused_forward(model, {"input_ids": ids.to(device), "use_cache": False},
                                           pack_sequences(ids, torch.ones_like(ids), labels).to(device))
                after.append(out.log_probs.float()[1])
    finally:
        model.train(was_training)
    leak = (after[0] - after[1]).abs().max().item()
    shift = (after[0] - alone).abs().max().item()
    if leak > leak_tolerance or shift > shift_tolerance:
        raise ValueError(
            f"padding_free: this model does not reproduce padded log-probs on a packed row (cross-sequence difference "
            f"{leak:.2e}, tolerance {leak_tolerance:.0e}; packed-vs-padded difference {shift:.2e}, tolerance "
            f"{shift_tolerance:.0e}); its attention "
            f"implementation ({getattr(model.config, '_attn_implementation', '?')}) or position handling does not "
            "support packed sequences. Set `padding_free: false`."
        )


# ----------------------------------------------------------------------------- per-sequence ("varlen") sdpa
PACKED_SDPA = "packed_sdpa"


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                          position_ids=None, **kwargs):
    """sdpa that attends within each packed sequence separately, like flash-attention's varlen kernel.

    transformers' own sdpa runs a packed row ``[1, H, L, D]`` as ONE attention with a dense ``[L, L]`` block-diagonal
    mask: O(L^2) work, most of it masked out, so a packed row costs more than the padded batch (measured in
    docs/padding-free.md). Here the row is cut at the sequence starts read from ``position_ids`` (the rule of
    `transformers.masking_utils.find_packed_sequence_indices`: a position that is not the previous + 1) and each piece
    runs causal sdpa on its own: sum_i len_i^2 work, no padding anywhere. Anything that is not a packed training row
    (batch > 1, a single sequence, a KV cache, sliding windows, attention sinks, no ``position_ids``) goes to
    transformers' sdpa with its mask unchanged, so the function is exact wherever the registered name is used.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    starts = None
    if position_ids is not None and query.size(0) == 1 and query.size(2) == key.size(2) > 1:
        positions = position_ids.reshape(-1)
        starts = torch.nonzero(positions[1:] != positions[:-1] + 1).reshape(-1) + 1
    special = (kwargs.get("sliding_window") is not None or kwargs.get("s_aux") is not None
               or not getattr(module, "is_causal", True))
    if starts is None or starts.numel() == 0 or special:
        if starts is not None and starts.numel() and attention_mask is None:
            # `_packed_sdpa_mask` skipped the dense mask, but this layer cannot run per sequence: refuse, never leak
            raise RuntimeError("packed_sdpa: a packed row reached a layer with sliding windows, attention sinks or "
                               "bidirectional attention and no mask; set `padding_free: false` for this model.")
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      position_ids=position_ids, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    bounds = [0, *starts.tolist(), query.size(2)]
    dropout = dropout if module.training else 0.0
    pieces = [
        torch.nn.functional.scaled_dot_product_attention(
            query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], dropout_p=dropout, scale=scaling, is_causal=True)
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    # [1, H, L, D] -> [1, L, H, D], the layout transformers' attention functions return
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def _packed_sdpa_mask(batch_size, q_length, kv_length, *args, attention_mask=None, local_size=None, **kwargs):
    """sdpa's mask builder, except for a single unpadded row without a local window: no mask (a plain row is causal
    anyway; a packed row is cut into sequences by `packed_sdpa_attention`). Skips building a dense [L, L] mask that
    would cost more than the attention it masks."""
    from transformers.masking_utils import sdpa_mask

    if batch_size == 1 and attention_mask is None and local_size is None and q_length == kv_length:
        return None
    return sdpa_mask(batch_size, q_length, kv_length, *args, attention_mask=attention_mask, local_size=local_size,
                     **kwargs)


def register_packed_sdpa() -> str:
    """Register `packed_sdpa_attention` and its mask builder under `PACKED_SDPA` (idempotent); return the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_SDPA, _packed_sdpa_mask)
    return PACKED_SDPA
