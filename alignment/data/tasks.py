"""A small, deterministic suite of verifiable tasks (arithmetic, comparison, counting, reversal, word problems).

Every task has one short, exactly checkable answer, which makes the suite usable for all three training modes:
SFT (question -> answer), preference optimisation (answer preferred over a plausible wrong answer) and RL with a
verifiable reward (see :mod:`alignment.data.answers`).

The suite is generated from a seed, and a snapshot of it ships with the package (``snapshot/train.jsonl`` and
``snapshot/test.jsonl``) so that experiments never depend on regenerating it. Rebuild the snapshot with::

    python -m alignment.data.tasks --write-snapshot [DIR]

Design notes:

* Each domain draws from its own ``random.Random(f"{domain}:{seed}")`` stream, so adding, removing or changing one
  domain never changes another domain's rows.
* Within a domain, train and test are cut from one de-duplicated stream of questions (test = the first ``n_test``
  questions, train = the next ``n_train``), so the splits never share a question and ids are unique across splits.
  The test split therefore does not change when ``n_train`` changes.
* ``subtraction`` always puts the larger operand first, so its answers are never negative (always >= 1).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

ANSWER_INSTRUCTION = "Reply with just the final answer."

SPLITS = ("train", "test")
FORMATS = ("sft", "preference", "prompt_only")
SNAPSHOT_DIR = Path(__file__).resolve().parent / "snapshot"
DEFAULT_SEED = 1234

# Give up on a domain once this many draws in a row produced nothing new: the domain's question pool is too small for
# the requested number of rows (an error is better than an endless loop).
_MAX_STALE_DRAWS = 10_000


@dataclass(frozen=True)
class TaskItem:
    """One generated task. ``answer`` and ``wrong_answer`` are strings (numbers written as plain integers)."""

    question: str
    answer: str
    wrong_answer: str


DomainFn = Callable[[random.Random], TaskItem]
DOMAINS: dict[str, DomainFn] = {}


def register_domain(name: str) -> Callable[[DomainFn], DomainFn]:
    """Decorator registering ``fn(rng) -> TaskItem`` as the generator of the task domain ``name``."""

    def decorator(fn: DomainFn) -> DomainFn:
        if name in DOMAINS:
            raise ValueError(f"Task domain {name!r} is already registered.")
        DOMAINS[name] = fn
        return fn

    return decorator


def _check_choice(kind: str, value: str, valid: Iterable[str]) -> None:
    """Raise a ValueError naming every valid value when ``value`` is not one of them."""
    valid = list(valid)
    if value not in valid:
        raise ValueError(f"Unknown {kind} {value!r}; valid values: {', '.join(valid)}.")


def get_domain(name: str) -> DomainFn:
    """The generator registered for ``name``; ValueError listing the registered names otherwise."""
    _check_choice("task domain", name, DOMAINS)
    return DOMAINS[name]


def _ask(question: str) -> str:
    """Append the shared instruction, so every prompt asks for a bare answer the checker can read."""
    return f"{question} {ANSWER_INSTRUCTION}"


# ----------------------------------------------------------------------------------------------------- wrong answers


def _swap_digits(value: int) -> int:
    """Reverse the digits of ``value`` (keeping the sign), e.g. 85 -> 58: a classic transcription slip."""
    sign = -1 if value < 0 else 1
    return sign * int(str(abs(value))[::-1])


def _add_without_carry(a: int, b: int) -> int:
    """Column-wise sum of two non-negative numbers that forgets every carry, e.g. 47 + 38 -> 75."""
    result, place = 0, 1
    while a or b:
        result += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return result


def _subtract_without_borrow(a: int, b: int) -> int:
    """Column-wise |digit difference|, the 'smaller from larger' borrow error, e.g. 52 - 38 -> 26."""
    result, place = 0, 1
    while a or b:
        result += abs(a % 10 - b % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return result


def _multiply_without_carry(a: int, digit: int) -> int:
    """Multiply a number by one digit but drop the carries between columns, e.g. 47 * 6 -> 42 + 40 -> 442 -> 82."""
    result, place = 0, 1
    while a:
        result += ((a % 10) * digit % 10) * place
        a, place = a // 10, place * 10
    return result


def _pick_wrong(rng: random.Random, answer: int, candidates: list[int], allow_negative: bool = False) -> str:
    """A plausible wrong answer: a random valid candidate, falling back to ``answer + 1``.

    A candidate is valid when it differs from the answer and (unless ``allow_negative``) is not negative, because
    a negative count or total would be implausibly wrong and too easy for the model to reject.
    """
    valid = [c for c in dict.fromkeys(candidates) if c != answer and (allow_negative or c >= 0)]
    return str(rng.choice(valid) if valid else answer + 1)


# ------------------------------------------------------------------------------------------------------- word lists

# Common lowercase English words of 4-6 letters; palindromes are filtered out below because their reversal would equal
# the word itself. The reversal domain draws one question per word, so the list must comfortably exceed the ~350
# rows a snapshot needs per domain.
_WORD_TEXT = """
able acid aged also area army away baby back ball band bank base bath bear beat beef bell belt best bird blow blue
boat body bone book boot born boss both bowl bulk burn bush busy cake call calm camp card care cart case cash cast
cell chat chip city clay club coal coat code cold come cook cool cope copy core corn cost crew crop dark data date
dawn dead deal dear debt deck deep deer desk diet dirt dish dock door dose down draw drop drum duck dust duty earn
east easy edge else even ever face fact fail fair fall farm fast fate fear feed feel file fill film find fine fire
firm fish five flag flat flow food foot fork form fort four free frog fuel full fund gain game gate gear gift girl
give glad goal gold golf good gray grow hair half hall hand hang hard harm hate have head hear heat help herb here
hero hide high hill hint hold hole home hope horn host hour huge hunt idea inch iron item join joke jump jury keen
keep kick kind king kiss kite knee knot know lack lady lake lamp land lane last late lawn lead leaf lean left lend
lens life lift like lime line link lion list live load loan lock long look lord lose loud love luck lung made mail
main make male mall many mark mask mass meal meat meet melt menu mild milk mind mine mint miss mist mood moon more
most move much must nail name near neck need nest news next nice nine node none nose note oven pace pack page pain
pair palm park part pass past path peak pear pick pile pink pipe plan play plot plug poem poet pole pond pool poor
port pose post pour pull pump pure push quiz race rain rank rare rate read real rest rice rich ride ring rise risk
road rock role roof room root rope rose rule rush safe sail salt same sand save seat seed seek self sell send ship
shoe shop shot show shut sick side sign silk sing sink site size skin slow snow soap sock soft soil song soon sort
soul soup spot star stay step stop suit swim tail take tale talk tall tank tape task team tear tell tent term test
text than that them then they thin this tide tiny tire told tone tool tour town tree trip true tube tune turn twin
type unit upon used user vast verb very view vote wage wait wake walk wall want warm wash wave weak wear week well
west what when wide wife wild will wind wine wing wire wise wish with wolf wood wool word work yard year zero zone
apple beach bread brick chair chalk cloud dance dream eagle earth field flame fruit ghost glass grape green happy
heart horse house juice knife lemon light magic mango money mouse music night ocean paint paper party peach piano
pizza plant plate queen quiet radio river robot salad sheep shirt smile snake space spoon storm sugar table tiger
toast tooth train water whale world zebra angle badge blank bloom brush cabin candy chess clock crane crown daisy
fence frost grass honey jelly koala laugh maple metal mouth nurse olive onion pearl pilot pound press pride prize
scale scarf shark shelf skirt sleep slice sound spice sport stamp stone sweet thumb towel tower trail truck uncle
voice wheel wrist yacht young animal basket bottle bridge butter camera candle carpet castle cheese circle cookie
dinner doctor dragon flower forest garden guitar hammer island jacket kitten ladder letter market mirror monkey
number orange pencil pepper pillow planet pocket purple rabbit rocket silver spider summer ticket tomato turtle
window winter yellow anchor branch button cotton friend hockey mitten parrot pirate powder puzzle saddle school
shadow singer sister stream string tunnel velvet violin wallet
"""
WORDS: tuple[str, ...] = tuple(
    w for w in dict.fromkeys(_WORD_TEXT.split()) if w.isalpha() and w.islower() and 4 <= len(w) <= 6 and w != w[::-1]
)

# Longer words with repeated letters, where letter counting is genuinely error-prone for language models.
_LONG_WORDS = """
strawberry banana mississippi balloon committee coffee success bookkeeper raspberry blueberry chocolate
cinnamon assessment tomorrow necessary pineapple grammar millennium accommodate possession embarrass
occurrence parallel broccoli spaghetti hippopotamus giraffe elephant butterfly cucumber watermelon
address cheerleader cookbook freezer goddess happiness letterbox llama mammal pepperoni toffee vacuum zucchini
beekeeper bubblegum grasshopper kangaroo peppermint referee successful tattoo woodpecker sheepskin teepee
"""
LONG_WORDS: tuple[str, ...] = tuple(dict.fromkeys(_LONG_WORDS.split()))

_NAMES = ("Sam", "Mia", "Leo", "Ava", "Noah", "Emma", "Liam", "Zoe", "Omar", "Priya", "Ken", "Lucy", "Ben", "Nina")
_ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "balloons", "shells", "stamps")


# ---------------------------------------------------------------------------------------------------------- domains


@register_domain("addition")
def _addition(rng: random.Random) -> TaskItem:
    """Easy: the sum of two 1-2 digit numbers."""
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    answer = a + b
    wrong = _pick_wrong(rng, answer, [answer + 1, answer - 1, answer + 10, answer - 10,
                                      _add_without_carry(a, b), _swap_digits(answer)])
    return TaskItem(_ask(f"What is {a} + {b}?"), str(answer), wrong)


@register_domain("subtraction")
def _subtraction(rng: random.Random) -> TaskItem:
    """Two 2-digit numbers, larger first, so the difference is always positive (never negative, never zero)."""
    a, b = rng.sample(range(10, 100), 2)
    a, b = max(a, b), min(a, b)
    answer = a - b
    wrong = _pick_wrong(rng, answer, [answer + 1, answer - 1, answer + 10, answer - 10,
                                      _subtract_without_borrow(a, b), _swap_digits(answer)])
    return TaskItem(_ask(f"What is {a} - {b}?"), str(answer), wrong)


@register_domain("multiplication")
def _multiplication(rng: random.Random) -> TaskItem:
    """Harder: a 2-digit number times a 1-digit number (2-9; times 1 would be trivial)."""
    a, b = rng.randint(10, 99), rng.randint(2, 9)
    answer = a * b
    # answer - a / answer + a: one group too few or too many, the typical repeated-addition slip.
    wrong = _pick_wrong(rng, answer, [answer - a, answer + a, answer + 10, answer - 10,
                                      _multiply_without_carry(a, b), _swap_digits(answer)])
    return TaskItem(_ask(f"What is {a} * {b}?"), str(answer), wrong)


@register_domain("comparison")
def _comparison(rng: random.Random) -> TaskItem:
    """Pick the larger of two distinct 2-digit numbers; the wrong answer is the smaller one."""
    a, b = rng.sample(range(10, 100), 2)
    return TaskItem(_ask(f"Which number is larger: {a} or {b}?"), str(max(a, b)), str(min(a, b)))


@register_domain("counting")
def _counting(rng: random.Random) -> TaskItem:
    """Count a letter in a common word; usually a letter of the word, sometimes (15%) one it lacks (answer 0)."""
    # Half the draws use the long repeated-letter words, and repeated letters are preferred, so that counts above 1
    # (where models actually fail) are common instead of nearly every answer being 1.
    word = rng.choice(LONG_WORDS if rng.random() < 0.5 else WORDS)
    repeated = sorted(c for c in set(word) if word.count(c) > 1)
    if rng.random() < 0.15:
        letter = rng.choice(sorted(set("abcdefghijklmnopqrstuvwxyz") - set(word)))
    elif repeated and rng.random() < 0.6:
        letter = rng.choice(repeated)
    else:
        letter = rng.choice(word)
    answer = word.count(letter)
    wrong = answer + 1 if answer == 0 or rng.random() < 0.5 else answer - 1
    question = f"How many times does the letter '{letter}' appear in the word '{word}'?"
    return TaskItem(_ask(question), str(answer), str(wrong))


@register_domain("reversal")
def _reversal(rng: random.Random) -> TaskItem:
    """Reverse a 4-6 letter word; the wrong answer is the word itself or the reversal with two letters swapped."""
    word = rng.choice(WORDS)
    answer = word[::-1]
    if rng.random() < 0.5:
        wrong = word  # Never equals the answer: palindromes are excluded from WORDS.
    else:
        # Swap two adjacent letters that differ (one always exists, since the word is not a palindrome).
        spots = [i for i in range(len(answer) - 1) if answer[i] != answer[i + 1]]
        i = rng.choice(spots)
        wrong = answer[:i] + answer[i + 1] + answer[i] + answer[i + 2:]
    return TaskItem(_ask(f"Reverse the letters of the word '{word}'."), answer, wrong)


def _story_give(rng, name, item):
    a = rng.randint(5, 30)
    b = rng.randint(1, a - 1)
    story = f"{name} has {a} {item}. {name} gives {b} of them to a friend. How many {item} does {name} have now?"
    return story, a - b, [a + b]


def _story_buy(rng, name, item):
    a, b = rng.randint(2, 30), rng.randint(2, 20)
    story = f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?"
    return story, a + b, [abs(a - b)]


def _story_lose(rng, name, item):
    a = rng.randint(5, 30)
    b = rng.randint(1, a - 1)
    story = f"{name} had {a} {item} and lost {b} of them. How many {item} are left?"
    return story, a - b, [a + b]


def _story_together(rng, name, item):
    other = rng.choice([n for n in _NAMES if n != name])
    a, b = rng.randint(2, 30), rng.randint(2, 30)
    story = f"{name} has {a} {item} and {other} has {b} {item}. How many {item} do they have together?"
    return story, a + b, [abs(a - b)]


def _story_groups(rng, name, item):
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    story = f"{name} has {a} bags with {b} {item} in each bag. How many {item} does {name} have in total?"
    return story, a * b, [a + b]


def _story_share(rng, name, item):
    friends, each = rng.randint(2, 9), rng.randint(2, 9)
    story = (f"{name} shares {friends * each} {item} equally among {friends} friends. "
             f"How many {item} does each friend get?")
    return story, each, [friends * each - friends]


# Each story returns (text, answer, wrong-operation answers); the wrong operation is the most plausible mistake.
_STORIES = (_story_give, _story_buy, _story_lose, _story_together, _story_groups, _story_share)


@register_domain("word_problem")
def _word_problem(rng: random.Random) -> TaskItem:
    """A one-step story with small numbers (add, subtract, multiply or share equally)."""
    story = rng.choice(_STORIES)
    text, answer, wrong_ops = story(rng, rng.choice(_NAMES), rng.choice(_ITEMS))
    wrong = _pick_wrong(rng, answer, wrong_ops + [answer + 1, answer - 1])
    return TaskItem(_ask(text), str(answer), wrong)


# ------------------------------------------------------------------------------------------------------- generation


def generate_tasks(domain: str, n: int, seed: int, exclude: Iterable[str] = ()) -> list[dict]:
    """``n`` distinct tasks of ``domain`` as rows ``{"id", "domain", "question", "answer", "wrong_answer"}``.

    Deterministic in ``(domain, seed)``; questions in ``exclude`` (e.g. another split's) are skipped. Raises a
    ValueError if the domain cannot produce ``n`` distinct questions.
    """
    fn = get_domain(domain)
    rng = random.Random(f"{domain}:{seed}")
    seen = set(exclude)
    rows: list[dict] = []
    stale = 0
    while len(rows) < n:
        item = fn(rng)
        if item.question in seen:
            stale += 1
            if stale > _MAX_STALE_DRAWS:
                raise ValueError(f"Domain {domain!r} ran out of distinct questions after {len(rows)} of {n} rows.")
            continue
        stale = 0
        seen.add(item.question)
        rows.append({"id": f"{domain}-{seed}-{len(rows)}", "domain": domain, "question": item.question,
                     "answer": item.answer, "wrong_answer": item.wrong_answer})
    return rows


def build_snapshot(seed: int = DEFAULT_SEED, n_train: int = 300, n_test: int = 50) -> dict[str, list[dict]]:
    """``{"train": rows, "test": rows}`` over all domains, in registration order.

    Per domain, one stream of ``n_test + n_train`` distinct questions is cut into test (first) and train (rest), so
    the splits share no question and no id.
    """
    snapshot: dict[str, list[dict]] = {"train": [], "test": []}
    for domain in DOMAINS:
        rows = generate_tasks(domain, n_test + n_train, seed)
        snapshot["test"].extend(rows[:n_test])
        snapshot["train"].extend(rows[n_test:])
    return snapshot


def serialize_rows(rows: Iterable[dict]) -> str:
    """JSON Lines text: one ``sort_keys`` object per line, each line newline-terminated (byte-stable)."""
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)


def write_snapshot(directory: str | Path | None = None, **build_kwargs) -> dict[str, Path]:
    """Write :func:`build_snapshot` as train.jsonl and test.jsonl to ``directory`` (default: the shipped one)."""
    directory = Path(directory) if directory is not None else SNAPSHOT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in build_snapshot(**build_kwargs).items():
        paths[split] = directory / f"{split}.jsonl"
        # newline="\n" keeps the bytes identical on every platform.
        with open(paths[split], "w", encoding="utf-8", newline="\n") as f:
            f.write(serialize_rows(rows))
    return paths


# ------------------------------------------------------------------------------------------------------ row formats


def to_sft(row: dict) -> dict:
    """Conversational SFT row: the question as the user turn, the bare answer as the assistant turn."""
    return {"messages": [{"role": "user", "content": row["question"]},
                         {"role": "assistant", "content": row["answer"]}],
            "domain": row["domain"], "answer": row["answer"]}


def to_preference(row: dict) -> dict:
    """Conversational preference row with an explicit prompt: the right answer chosen, the wrong one rejected."""
    return {"prompt": [{"role": "user", "content": row["question"]}],
            "chosen": [{"role": "assistant", "content": row["answer"]}],
            "rejected": [{"role": "assistant", "content": row["wrong_answer"]}],
            "domain": row["domain"], "answer": row["answer"]}


def to_prompt_only(row: dict) -> dict:
    """Conversational prompt-only row for online RL; ``answer`` rides along for the reward function."""
    return {"prompt": [{"role": "user", "content": row["question"]}], "domain": row["domain"], "answer": row["answer"]}


_FORMATTERS: dict[str, Callable[[dict], dict]] = {"sft": to_sft, "preference": to_preference,
                                                  "prompt_only": to_prompt_only}


@lru_cache(maxsize=None)
def _read_split(split: str) -> tuple[dict, ...]:
    """The shipped snapshot rows of one split (cached: the file never changes while the process runs)."""
    with open(SNAPSHOT_DIR / f"{split}.jsonl", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def check_label_noise(label_noise: float) -> None:
    """ValueError unless ``0 <= label_noise <= 1`` (0.5 = labels carry no information; above 0.5 mostly inverted)."""
    if isinstance(label_noise, bool) or not isinstance(label_noise, (int, float)) or not 0.0 <= label_noise <= 1.0:
        raise ValueError(
            f"label_noise must be a fraction in [0, 1] (0 = clean labels, 0.5 = uninformative), got {label_noise!r}."
        )


def flipped_indices(n: int, label_noise: float, domain: str, noise_seed: int = 0) -> set[int]:
    """Positions (within one domain's ``n`` selected rows) whose labels a ``label_noise`` tier flips.

    Exactly ``round(label_noise * n)`` positions, drawn without replacement from ``random.Random(f"noise:{domain}:
    {noise_seed}")``: deterministic, and independent of which other domains are loaded. Note that the draw depends on
    ``n``, so changing ``limit_per_domain`` changes which rows are flipped.
    """
    check_label_noise(label_noise)
    k = round(label_noise * n)
    if k == 0:
        return set()
    return set(random.Random(f"noise:{domain}:{noise_seed}").sample(range(n), k))


def _flip_label(row: dict) -> dict:
    """A preference row with ``chosen`` and ``rejected`` swapped (``answer`` still holds the true answer)."""
    return {**row, "chosen": row["rejected"], "rejected": row["chosen"]}


def load_task_suite(split: str = "train", fmt: str = "preference", domains: list[str] | None = None,
                    limit_per_domain: int | None = None, label_noise: float = 0.0, noise_seed: int = 0):
    """The shipped task suite as a ``datasets.Dataset`` in one of the TRL conversational formats.

    Args:
        split: ``"train"`` (300 rows per domain) or ``"test"`` (50 rows per domain).
        fmt: ``"sft"`` (messages), ``"preference"`` (prompt/chosen/rejected) or ``"prompt_only"`` (prompt).
        domains: restrict to these domains (default: all); rows keep the snapshot's order.
        limit_per_domain: keep at most this many rows (the first ones) of each domain.
        label_noise: ``fmt="preference"`` only: a label-noise tier in ``[0, 1]``. In each domain, exactly
            ``round(label_noise * n)`` of its ``n`` selected rows get ``chosen`` and ``rejected`` swapped (rows drawn
            by :func:`flipped_indices`, seeded per domain, so one domain's flips never depend on another's), and a
            boolean ``label_flipped`` column marks them (``answer`` keeps the true answer). With ``0.0`` (default)
            nothing changes and no column is added. Recipes apply it to the train split only.
        noise_seed: seed of the flip draw; another seed flips another subset of the same size.
    """
    from datasets import Dataset  # Imported lazily: generating or checking tasks should not pay for `datasets`.

    _check_choice("split", split, SPLITS)
    _check_choice("format", fmt, _FORMATTERS)
    for domain in domains or ():
        _check_choice("task domain", domain, DOMAINS)
    if limit_per_domain is not None and limit_per_domain < 1:
        raise ValueError(f"limit_per_domain must be a positive integer or None, got {limit_per_domain!r}.")
    check_label_noise(label_noise)
    if label_noise and fmt != "preference":
        raise ValueError(f"label_noise only applies to fmt='preference' (it swaps chosen/rejected), got fmt={fmt!r}.")

    wanted = set(domains) if domains is not None else set(DOMAINS)
    kept: dict[str, int] = {}
    rows = []
    for row in _read_split(split):
        domain = row["domain"]
        if domain not in wanted or (limit_per_domain is not None and kept.get(domain, 0) >= limit_per_domain):
            continue
        kept[domain] = kept.get(domain, 0) + 1
        rows.append(_FORMATTERS[fmt](row))
    if not rows:
        raise ValueError(f"No rows selected from split {split!r} for domains {sorted(wanted)}.")
    if label_noise:
        flips = {domain: flipped_indices(n, label_noise, domain, noise_seed) for domain, n in kept.items()}
        position: dict[str, int] = {}
        noisy = []
        for row in rows:
            i = position[row["domain"]] = position.get(row["domain"], -1) + 1
            flipped = i in flips[row["domain"]]
            noisy.append({**(_flip_label(row) if flipped else row), "label_flipped": flipped})
        rows = noisy
    return Dataset.from_list(rows)


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m alignment.data.tasks --write-snapshot [DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-snapshot", nargs="?", const=str(SNAPSHOT_DIR), metavar="DIR",
                        help="write train.jsonl/test.jsonl to DIR (default: the shipped snapshot directory)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    if args.write_snapshot is None:
        parser.error("nothing to do; pass --write-snapshot [DIR]")
    for split, path in write_snapshot(args.write_snapshot, seed=args.seed).items():
        print(f"{split}: {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
