"""`overlong_penalty`: DAPO's soft overlong punishment on each completion's token count (arXiv 2503.14476)."""

from __future__ import annotations

from .registry import register_reward


def soft_overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """DAPO's soft overlong punishment (Yu et al., arXiv 2503.14476, Eq. 13) for one completion of ``length`` tokens.

    ``0`` if ``|y| <= L_max − L_cache``; ``((L_max − L_cache) − |y|) / L_cache`` if ``L_max − L_cache < |y| <= L_max``
    (linear from 0 to −1); ``−1`` beyond ``L_max``. The paper uses ``L_max = 20480``, ``L_cache = 4096``;
    ``L_cache = 0`` is a hard −1 beyond ``L_max`` only.
    """
    if length <= max_length - cache_length:
        return 0.0
    if length <= max_length:
        return ((max_length - cache_length) - length) / cache_length
    return -1.0


@register_reward("overlong_penalty")
def overlong_penalty(completions, completion_ids=None, *, max_length: int, cache_length: int,
                     **kwargs) -> list[float]:
    """DAPO soft overlong punishment (arXiv 2503.14476) on each completion's token count (`soft_overlong_penalty`).

    ``max_length`` (``L_max``, usually the trainer's ``max_completion_length``) and ``cache_length`` (``L_cache``,
    the soft zone before it; 0 ≤ L_cache ≤ L_max; DAPO: 4096 of 20480) must be set in the recipe. Reads the
    ``completion_ids`` TRL passes to reward functions. Same values as TRL's ``get_soft_overlong_punishment``.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"overlong_penalty: `max_length` must be a positive int, got {max_length!r}.")
    if isinstance(cache_length, bool) or not isinstance(cache_length, int) or not 0 <= cache_length <= max_length:
        raise ValueError(f"overlong_penalty: `cache_length` must be an int in [0, max_length={max_length}], "
                         f"got {cache_length!r}.")
    if completion_ids is None:
        raise ValueError("overlong_penalty needs `completion_ids` (TRL's GRPOTrainer passes them to reward functions).")
    if len(completion_ids) != len(completions):
        raise ValueError(f"Got {len(completions)} completions but {len(completion_ids)} completion_ids.")
    return [soft_overlong_penalty(len(ids), max_length, cache_length) for ids in completion_ids]
