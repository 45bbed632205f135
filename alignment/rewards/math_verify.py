"""`math_verify_reward`: final answers checked by symbolic equivalence with `math-verify` (LaTeX, boxed, units, %).

``accuracy_reward`` (`alignment.data.answers`) compares normalised answer *strings*, which is right for the task suite
(integers and words) but scores ``\\boxed{\\frac12}`` against ``0.5``, ``2\\sqrt2`` against ``\\sqrt8`` or ``x=3``
against ``3`` as wrong. This reward parses gold and completion into SymPy with Hugging Face's ``math-verify`` and
compares them with its ``verify`` (numeric within 6 decimals, symbolic simplification, sets, intervals, equations
``x=3`` vs ``3``, percentages ``50\\%`` vs ``0.5``, units stripped)::

    r(y) = 1  if verify(parse(gold), parse(y))       (gold parsed)
           0  otherwise                               (gold parsed)
           None                                       (gold not parseable: TRL skips the reward for this example)

Paper vs code (open-r1 ``accuracy_reward`` / TRL 1.16 ``trl.rewards.accuracy_reward``, which this follows):

* TRL's function reads only a ``solution`` column and only conversational completions (``completion[0]["content"]``);
  this one reads ``solution``, or ``answer`` when there is no ``solution``, and plain or conversational completions,
  which is why it is not TRL's function re-registered.
* TRL / open-r1 extract the completion's answer only next to an anchor (``try_extract_without_anchor=False``) with
  ``NormalizationConfig(units=True)`` alone, which turns off math-verify's ``malformed_operators`` fix: a bare ``7``,
  an inline ``$\\dfrac{3}{4}$`` and ``\\boxed{\\frac12}`` all score 0 there. Here the completion is parsed with
  math-verify's default LaTeX normalisation, ``\\boxed{}`` first (``boxed_match_priority=0``), then any LaTeX or plain
  expression (the task suite asks for bare answers), first match wins, as in open-r1.
* A bare gold (no ``$``, ``\\boxed``, ``\\(`` or ``\\[``) that looks like math (has a digit or a backslash) is parsed as
  the LaTeX ``$gold$``: TRL's ``parse(gold)`` finds nothing in ``\\sqrt{8}`` and reads ``3, -2`` as ``-2``.
* Unparseable gold gives ``None`` (TRL, open-r1). With this as the only reward such an example has no reward at all,
  which `GroupRLTrainer` refuses at that batch: give every example a parseable gold or add a second reward.
* math-verify's timeouts use ``signal.alarm``, which works only in the main thread; off it they are turned off, as
  TRL does.
"""

from __future__ import annotations

import re
import threading

from ..data.answers import _completion_text
from .registry import _TRL_ARGUMENTS, register_reward

INSTALL_HINT = "pip install 'alignment-toolkit[math]'"
# A gold that already marks its math (a full solution, a boxed answer) is parsed as it is.
_DELIMITED_RE = re.compile(r"\$|\\boxed|\\\(|\\\[")
_MATHLIKE_RE = re.compile(r"[\d\\]")


def _math_verify():
    """The ``math_verify`` module, or an ImportError saying how to install it (it is an optional extra)."""
    try:
        import math_verify
    except ImportError as error:
        raise ImportError(f"`math_verify_reward` needs the `math-verify` package: {INSTALL_HINT} "
                          f"(or `pip install math-verify`). ({error})") from None
    return math_verify


def _timeouts() -> tuple[int | None, int | None]:
    # signal.alarm only works in the main thread; TRL turns the timeouts off elsewhere too.
    return (10, 5) if threading.current_thread() is threading.main_thread() else (None, None)


def parse_gold(gold: str) -> list:
    """math-verify's parse of a gold answer (a bare number or LaTeX expression, or a solution text); [] if none."""
    mv = _math_verify()
    parsing_timeout, _ = _timeouts()
    gold = str(gold).strip()
    config = [mv.LatexExtractionConfig(), mv.ExprExtractionConfig()]
    if not _DELIMITED_RE.search(gold) and _MATHLIKE_RE.search(gold):
        parsed = mv.parse(f"${gold}$", extraction_config=config, parsing_timeout=parsing_timeout)
        if parsed:
            return parsed
    return mv.parse(gold, extraction_config=config, parsing_timeout=parsing_timeout)


def parse_completion(text: str) -> list:
    """math-verify's parse of a completion's answer: the first ``\\boxed{}``, else the first LaTeX or expression."""
    mv = _math_verify()
    parsing_timeout, _ = _timeouts()
    config = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    return mv.parse(text, extraction_config=config, extraction_mode="first_match", parsing_timeout=parsing_timeout)


def math_verify_score(completion: str, gold: str) -> float | None:
    """1.0 / 0.0 whether ``completion``'s answer equals ``gold`` under math-verify; None if ``gold`` does not parse."""
    mv = _math_verify()
    gold_parsed = parse_gold(gold)
    if not gold_parsed:
        return None
    _, verify_timeout = _timeouts()
    try:
        return float(mv.verify(gold_parsed, parse_completion(completion), timeout_seconds=verify_timeout))
    except Exception:  # a SymPy failure inside the comparison is a wrong answer, not a crashed run (open-r1)
        return 0.0


@register_reward("math_verify_reward")
def math_verify_reward(completions, solution=None, answer=None, **kwargs) -> list[float | None]:
    """1.0 when the completion's answer is mathematically equal to the gold (math-verify), 0.0 if not, None if the
    gold does not parse.

    The gold is the ``solution`` column, or ``answer`` when there is no ``solution`` (TRL and open-r1 use
    ``solution``, the task suite ``answer``). Needs ``math-verify`` (``pip install 'alignment-toolkit[math]'``). See
    `alignment.rewards.math_verify` for what differs from TRL's reward; for a gold in another column, a file reward
    ``[math_verify_score(c, g) for c, g in zip(completions, my_column)]`` does it.
    """
    _math_verify()  # a missing package fails at the start-up check, not in the first step
    gold = solution if solution is not None else answer
    if gold is None:
        raise ValueError("math_verify_reward reads the gold answer from a `solution` or `answer` column, and the "
                         f"dataset has neither (columns: {sorted(k for k in kwargs if k not in _TRL_ARGUMENTS)}).")
    golds = [gold] * len(completions) if isinstance(gold, str) else list(gold)
    if len(golds) != len(completions):
        raise ValueError(f"math_verify_reward: got {len(completions)} completions but {len(golds)} gold answers.")
    return [math_verify_score(_completion_text(c), str(g)) for c, g in zip(completions, golds)]
