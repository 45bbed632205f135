"""Answer extraction and checking for the verifiable task suite (:mod:`alignment.data.tasks`).

The checker reads the *final* answer of a free-form completion, not its first number: models often restate the
question ("3 + 4 = 7") or reason step by step before answering. Extraction rules, first match wins:

1. the content of the last ``\\boxed{...}``;
2. the text after the last "answer is" / "answer:" / "####" marker (its first number-or-word token, skipping filler
   words such as "the" or "number");
3. the last number in the text (negatives, ``1,234`` thousands separators and integral decimals are normalised);
4. when the text has no number at all, the last word (for string answers such as reversed words).

:func:`accuracy_reward` wraps :func:`is_correct` with the signature TRL's ``GRPOTrainer`` expects of reward functions.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Chat-template control tokens that a decoded completion may still carry: <|im_end|>, <|eot_id|>, </s>, <eos>, ...
_SPECIAL_TOKEN_RE = re.compile(r"<\|[^<>|]*\|>|</?s>|<(?:eos|bos|pad|end_of_turn|start_of_turn|unk)>", re.IGNORECASE)

# A number: optional minus (only when not glued to a preceding word/number, so "10-5" is 10 and 5, not 10 and -5),
# then either comma-grouped thousands or plain digits, then an optional decimal part.
_NUMBER = r"(?:(?<![\w-])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_WORD_RE = re.compile(r"[^\W\d_]+")  # Letters only: reversal answers are plain lowercase words.
_TOKEN_RE = re.compile(rf"{_NUMBER}|[^\W\d_]+")
_MARKER_RE = re.compile(r"answer\s+is|answer\s*:|####", re.IGNORECASE)
# A quoted span; an opening straight quote must not follow a letter, so apostrophes ("it's") do not open quotes.
_QUOTED_RE = re.compile(r"(?<![^\W\d_])'([^'\n]+)'|\"([^\"\n]+)\"|`([^`\n]+)`|\u201c([^\u201d\n]+)\u201d"
                        r"|\u2018([^\u2019\n]+)\u2019")
_BOXED = "\\boxed{"
_TEXT_WRAPPER_RE = re.compile(r"^\\(?:text|textbf|mathrm|mathbf)\{(.*)\}$", re.DOTALL)

# Words that may sit between a marker and the actual answer ("the answer is the number 27", "Answer: simply 5").
_FILLER = frozenset({"the", "a", "an", "number", "value", "final", "result", "word", "reversed", "string", "simply",
                     "just", "therefore", "thus", "so", "then", "equal", "equals", "to", "be", "is", "likely",
                     "clearly", "exactly", "letter", "letters", "count", "total"})

# Spelled-out numbers a model may answer with ("three"); normalised to digits so they compare equal.
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}

_STRIP_CHARS = " \t\r\n'\"`*_.,;:!?()[]\u2018\u2019\u201c\u201d"


def _strip_special_tokens(text: str) -> str:
    """Remove chat control tokens, which would otherwise count as words."""
    return _SPECIAL_TOKEN_RE.sub(" ", text)


def _normalize_number(token: str) -> str | None:
    """Canonical decimal text of a numeric token (``"1,234"`` -> ``"1234"``, ``"7.0"`` -> ``"7"``), else None."""
    if not re.fullmatch(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+", token):
        return None
    try:
        value = Decimal(token.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the regex already guarantees a valid literal
        return None
    if value == value.to_integral_value():
        return str(int(value))  # Also maps "-0" to "0".
    return format(value.normalize(), "f")  # "3.50" -> "3.5", never scientific notation.


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, matching nested braces; None when there is none (or it is unclosed)."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(_BOXED)
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


def _clean_boxed(content: str) -> str | None:
    """A boxed answer as a token: unwrap ``\\text{...}``, normalise numbers, strip quotes and punctuation."""
    content = content.strip()
    wrapped = _TEXT_WRAPPER_RE.match(content)
    if wrapped:
        content = wrapped.group(1).strip()
    number = _normalize_number(content)
    if number is not None:
        return number
    content = content.strip(_STRIP_CHARS)
    return content or None


def _token_value(token: str) -> str:
    """A number-or-word token as answer text: numbers normalised, words returned as written."""
    number = _normalize_number(token)
    return number if number is not None else token


def _after_last_marker(text: str) -> str | None:
    """First meaningful token after the last answer marker, or None when there is no marker (or nothing after it)."""
    markers = list(_MARKER_RE.finditer(text))
    if not markers:
        return None
    for token in _TOKEN_RE.findall(text[markers[-1].end():]):
        if token.lower() not in _FILLER:
            return _token_value(token)
    return None


def extract_final_answer(text: str | None) -> str | None:
    """The final answer of a free-form completion (see the module docstring for the rules), or None if empty."""
    if not text:
        return None
    text = _strip_special_tokens(text)
    boxed = _last_boxed(text)
    if boxed is not None:
        cleaned = _clean_boxed(boxed)
        if cleaned is not None:
            return cleaned
    marked = _after_last_marker(text)
    if marked is not None:
        return marked
    numbers = _NUMBER_RE.findall(text)
    if numbers:
        return _token_value(numbers[-1])
    words = _WORD_RE.findall(text)
    return words[-1] if words else None


def normalize_answer(s: str | None) -> str:
    """Comparable form of an answer: trimmed, lowercased, unquoted, no trailing period, numbers canonical."""
    if s is None:
        return ""
    s = _strip_special_tokens(str(s)).strip().strip(_STRIP_CHARS).lower()
    number = _normalize_number(s)
    if number is not None:
        return number
    return _NUMBER_WORDS.get(s, s)


def _last_quoted(text: str) -> str | None:
    """Text inside the last quoted span ('...', "...", `...` or curly quotes), or None."""
    spans = list(_QUOTED_RE.finditer(text))
    if not spans:
        return None
    return next(group for group in spans[-1].groups() if group is not None)


def _is_numeric(answer: str) -> bool:
    return _normalize_number(answer) is not None


def is_correct(completion: str | None, answer: str) -> bool:
    """Whether ``completion``'s final answer equals ``answer`` (after :func:`normalize_answer`).

    For non-numeric answers (reversed words) the completion is also accepted when, stripped of quotes and
    punctuation, it is exactly the answer, when its last quoted string is the answer, or when its last word is (a
    digit elsewhere, e.g. "'apple' has 5 letters; reversed: elppa", would otherwise win rule 3). All of these read
    the *last* candidate, so "The reverse of 'abcd' is 'dcba'." is right for dcba and wrong for abcd.
    """
    if not completion:
        return False
    gold = normalize_answer(answer)
    if normalize_answer(extract_final_answer(completion)) == gold:
        return True
    if _is_numeric(gold):
        return False
    text = _strip_special_tokens(completion)
    words = _WORD_RE.findall(text)
    candidates = (text, _last_quoted(text), words[-1] if words else None)
    return any(c is not None and normalize_answer(c) == gold for c in candidates)


def _completion_text(completion) -> str:
    """Text of a completion given as a string, a message dict, or a list of messages (TRL conversational format)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content", "")
    elif isinstance(completion, (list, tuple)) and completion:
        # The last message is the model's reply; earlier ones (if any) are context.
        return _completion_text(completion[-1])
    else:
        return ""
    if isinstance(content, list):  # Multimodal-style content parts: keep the text parts.
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def accuracy_reward(completions, answer, **kwargs) -> list[float]:
    """TRL ``GRPOTrainer`` reward function: 1.0 for each completion whose final answer is right, else 0.0.

    ``completions`` holds strings or lists of ``{"role": "assistant", "content": ...}`` messages; ``answer`` is the
    dataset's ``answer`` column (one string per completion; a single string is used for all). Other columns passed
    by the trainer (``prompts``, ``domain``, ...) are ignored.
    """
    answers = [answer] * len(completions) if isinstance(answer, str) else list(answer)
    if len(answers) != len(completions):
        raise ValueError(f"Got {len(completions)} completions but {len(answers)} answers.")
    return [1.0 if is_correct(_completion_text(c), str(a)) else 0.0 for c, a in zip(completions, answers)]
