"""Per-group gradients of a chosen parameter subset, flattened: the one routine behind DoGE's per-domain gradients
(`domain_gradients.DomainGradients`, arXiv 2310.15393) and gradient-based reward weighting's per-objective gradients
(`reward_weighting`, Lu et al., arXiv 2509.11452).

Both compare gradients of several losses (one per domain, one per objective) on a subset of the parameters, next to
the training step and without touching ``.grad``: `select_gradient_parameters` chooses the subset (by name, or by
decoder-block range), `group_gradients` yields one flat ``[P]`` gradient per group loss via `torch.autograd.grad`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

import torch

# Names of the repeated decoder blocks in Hugging Face models: `model.layers.3.` (Llama, Qwen, Mistral, ...),
# `transformer.h.3.` (GPT-2), `gpt_neox.layers.3.`, `blocks.3.`.
_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def select_gradient_parameters(model: torch.nn.Module, *, pattern: str | None = None,
                               blocks: Callable[[int], tuple[int, int]] | None = None, field: str,
                               no_blocks_fix: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The trainable ``(name, parameter)`` pairs whose gradients are compared, in ``named_parameters`` order.

    ``pattern`` (regex, `re.search` on the name) if given; else every trainable parameter of decoder blocks
    ``first..last`` (inclusive), where ``(first, last) = blocks(L)`` for a model of ``L`` blocks (block index = the
    number in ``layers.<i>.`` / ``h.<i>.`` / ``blocks.<i>.``). ``field`` is the recipe field that made the choice,
    named in every error; ``no_blocks_fix`` ends the error for a model without recognisable blocks.
    """
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if pattern is not None:
        compiled = re.compile(pattern)
        chosen = [(name, p) for name, p in trainable if compiled.search(name)]
        if not chosen:
            raise ValueError(f"`{field}={pattern!r}` matches no trainable parameter; e.g. "
                             f"{[name for name, _ in trainable[:4]]}.")
        return chosen
    if blocks is None:
        raise ValueError("select_gradient_parameters needs `pattern` or `blocks`.")
    indices = {name: int(match.group(1)) for name, _ in trainable if (match := _BLOCK.search(name))}
    if not indices:
        raise ValueError(f"`{field}` selects decoder blocks, but no trainable parameter name has a block index "
                         f"(`layers.<i>.`, `h.<i>.`, `blocks.<i>.`); {no_blocks_fix}")
    count = max(indices.values()) + 1
    first, last = blocks(count)
    if last >= count:
        raise ValueError(f"`{field}` {[first, last]} goes past the model's {count} layers.")
    if first > last:
        raise ValueError(f"`{field}` selects no decoder block (first {first} > last {last}).")
    return [(name, p) for name, p in trainable if first <= indices.get(name, -1) <= last]


def flat_gradient(loss: torch.Tensor, parameters: Sequence[torch.nn.Parameter], *,
                  retain_graph: bool) -> torch.Tensor:
    """``[P]`` float32 gradient of ``loss`` w.r.t. ``parameters``, flattened and concatenated (zeros for a parameter
    the loss does not reach). `torch.autograd.grad`: returned, never accumulated into ``.grad``."""
    grads = torch.autograd.grad(loss, parameters, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([torch.zeros(p.numel(), device=p.device) if g is None else g.detach().float().flatten()
                      for p, g in zip(parameters, grads)])


def group_gradients(losses: Sequence[torch.Tensor], parameters: Sequence[torch.nn.Parameter], *,
                    keep_graph: bool = True) -> Iterator[torch.Tensor]:
    """One ``[P]`` flat gradient per group loss, in order, computed when iterated (one row in memory at a time).

    ``keep_graph``: leave the graph for a later backward (the training step's own); False frees it with the last
    group's gradient.
    """
    for index, loss in enumerate(losses):
        yield flat_gradient(loss, parameters, retain_graph=keep_graph or index < len(losses) - 1)
