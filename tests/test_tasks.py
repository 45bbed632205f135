"""The embedded verifiable task suite: reproducible snapshot, split hygiene, correct answers, dataset formats."""

import json
import re
from collections import Counter

import pytest

from alignment.data import tasks
from alignment.data.answers import is_correct
from alignment.data.tasks import (
    ANSWER_INSTRUCTION,
    DOMAINS,
    SNAPSHOT_DIR,
    build_snapshot,
    generate_tasks,
    load_task_suite,
    serialize_rows,
    write_snapshot,
)

EXPECTED_DOMAINS = ["addition", "subtraction", "multiplication", "comparison", "counting", "reversal", "word_problem"]


@pytest.fixture(scope="module")
def snapshot():
    """The shipped snapshot files, parsed: {"train": rows, "test": rows}."""
    out = {}
    for split in ("train", "test"):
        with open(SNAPSHOT_DIR / f"{split}.jsonl", encoding="utf-8") as f:
            out[split] = [json.loads(line) for line in f]
    return out


def all_rows(snapshot):
    return snapshot["train"] + snapshot["test"]


# ------------------------------------------------------------------------------------------- snapshot reproducibility


def test_domains_registered_in_order():
    assert list(DOMAINS) == EXPECTED_DOMAINS


def test_snapshot_is_byte_for_byte_reproducible():
    built = build_snapshot()
    for split in ("train", "test"):
        shipped = (SNAPSHOT_DIR / f"{split}.jsonl").read_bytes()
        assert serialize_rows(built[split]).encode("utf-8") == shipped, f"{split}.jsonl is stale; rerun the CLI"


def test_write_snapshot_matches_shipped_files(tmp_path):
    paths = write_snapshot(tmp_path)
    for split, path in paths.items():
        assert path.read_bytes() == (SNAPSHOT_DIR / f"{split}.jsonl").read_bytes()


def test_cli_writes_snapshot(tmp_path):
    tasks.main(["--write-snapshot", str(tmp_path)])
    assert (tmp_path / "test.jsonl").read_bytes() == (SNAPSHOT_DIR / "test.jsonl").read_bytes()


def test_snapshot_size_and_counts(snapshot):
    total = sum((SNAPSHOT_DIR / f"{s}.jsonl").stat().st_size for s in ("train", "test"))
    assert total < 1_000_000
    assert Counter(r["domain"] for r in snapshot["train"]) == {d: 300 for d in EXPECTED_DOMAINS}
    assert Counter(r["domain"] for r in snapshot["test"]) == {d: 50 for d in EXPECTED_DOMAINS}


def test_generation_is_deterministic():
    for domain in DOMAINS:
        assert generate_tasks(domain, 20, seed=7) == generate_tasks(domain, 20, seed=7)
    assert generate_tasks("addition", 20, seed=7) != generate_tasks("addition", 20, seed=8)


def test_domains_seed_independently(monkeypatch):
    """Registering a new domain must not change any existing domain's rows."""
    before = build_snapshot(n_train=5, n_test=2)
    monkeypatch.setitem(DOMAINS, "aaa_extra", DOMAINS["addition"])
    after = build_snapshot(n_train=5, n_test=2)
    for split in ("train", "test"):
        assert [r for r in after[split] if r["domain"] != "aaa_extra"] == before[split]


def test_generate_tasks_row_shape_and_exclude():
    rows = generate_tasks("comparison", 3, seed=5)
    assert [r["id"] for r in rows] == ["comparison-5-0", "comparison-5-1", "comparison-5-2"]
    assert all(set(r) == {"id", "domain", "question", "answer", "wrong_answer"} for r in rows)
    excluded = generate_tasks("comparison", 3, seed=5, exclude={rows[0]["question"]})
    assert rows[0]["question"] not in {r["question"] for r in excluded}


def test_unknown_domain_lists_valid_names():
    with pytest.raises(ValueError, match="addition.*word_problem"):
        generate_tasks("division", 1, seed=0)


def test_too_many_rows_for_a_domain_raises(monkeypatch):
    monkeypatch.setattr(tasks, "_MAX_STALE_DRAWS", 50)
    with pytest.raises(ValueError, match="ran out"):
        generate_tasks("reversal", len(tasks.WORDS) + 1, seed=0)


# ---------------------------------------------------------------------------------------------------- split hygiene


def test_no_duplicate_questions_or_ids(snapshot):
    rows = all_rows(snapshot)
    assert len({r["question"] for r in rows}) == len(rows)
    assert len({r["id"] for r in rows}) == len(rows)


def test_train_test_do_not_share_questions(snapshot):
    train = {r["question"] for r in snapshot["train"]}
    assert not train & {r["question"] for r in snapshot["test"]}


def test_reversal_pool_is_large_and_clean():
    assert len(tasks.WORDS) >= 400
    assert all(w.isalpha() and w.islower() and 4 <= len(w) <= 6 and w != w[::-1] for w in tasks.WORDS)


# ------------------------------------------------------------------------------------------------ answer correctness


def _recompute(row):
    """The right answer, worked out from the question text independently of the generator."""
    q, domain = row["question"], row["domain"]
    if domain in ("addition", "subtraction", "multiplication"):
        a, op, b = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\? .*", q).groups()
        a, b = int(a), int(b)
        return {"+": a + b, "-": a - b, "*": a * b}[op]
    if domain == "comparison":
        a, b = map(int, re.fullmatch(r"Which number is larger: (\d+) or (\d+)\? .*", q).groups())
        return max(a, b)
    if domain == "counting":
        pattern = r"How many times does the letter '(\w)' appear in the word '(\w+)'\? .*"
        letter, word = re.fullmatch(pattern, q).groups()
        return word.count(letter)
    if domain == "reversal":
        return re.fullmatch(r"Reverse the letters of the word '(\w+)'\. .*", q).group(1)[::-1]
    if domain == "word_problem":
        a, b = map(int, re.findall(r"\d+", q))
        if " gives " in q or " lost " in q:
            return a - b
        if " buys " in q or " together" in q:
            return a + b
        if " in each bag" in q:
            return a * b
        if " equally among " in q:
            return a // b
    raise AssertionError(f"unparsed question: {q}")


def test_every_answer_is_actually_right(snapshot):
    for row in all_rows(snapshot):
        assert row["answer"] == str(_recompute(row)), row


def test_answer_constraints_per_domain(snapshot):
    for row in all_rows(snapshot):
        domain, answer, wrong = row["domain"], row["answer"], row["wrong_answer"]
        assert row["question"].endswith(" " + ANSWER_INSTRUCTION)
        assert isinstance(answer, str) and isinstance(wrong, str) and wrong != answer
        if domain == "subtraction":
            assert int(answer) > 0  # Documented: larger operand first, never negative.
        if domain == "comparison":
            a, b = map(int, re.findall(r"\d+", row["question"]))
            assert int(wrong) == min(a, b)
        if domain == "counting":
            assert int(wrong) >= 0 and abs(int(wrong) - int(answer)) == 1
        if domain == "reversal":
            word = answer[::-1]
            assert wrong == word or (sorted(wrong) == sorted(answer) and
                                     sum(x != y for x, y in zip(wrong, answer)) == 2)
        if domain not in ("reversal",):
            assert int(wrong) >= 0


def test_checker_accepts_answer_and_rejects_wrong_answer(snapshot):
    for row in all_rows(snapshot):
        assert is_correct(row["answer"], row["answer"]), row
        assert not is_correct(row["wrong_answer"], row["answer"]), row


def test_domains_have_varied_answers(snapshot):
    """Guard against a degenerate generator (e.g. counting always 1)."""
    by_domain = {}
    for row in snapshot["train"]:
        by_domain.setdefault(row["domain"], set()).add(row["answer"])
    assert all(len(answers) >= 4 for answers in by_domain.values())


# ---------------------------------------------------------------------------------------------------- dataset loader


@pytest.mark.parametrize(
    "fmt, columns",
    [
        ("sft", ["messages", "domain", "answer"]),
        ("preference", ["prompt", "chosen", "rejected", "domain", "answer"]),
        ("prompt_only", ["prompt", "domain", "answer"]),
    ],
)
def test_load_task_suite_columns(fmt, columns):
    ds = load_task_suite("test", fmt=fmt)
    assert ds.column_names == columns
    assert len(ds) == 50 * len(EXPECTED_DOMAINS)
    row = ds[0]
    key = "messages" if fmt == "sft" else "prompt"
    assert row[key][0]["role"] == "user" and row[key][0]["content"].endswith(ANSWER_INSTRUCTION)
    if fmt == "sft":
        assert row["messages"][1] == {"role": "assistant", "content": row["answer"]}
    if fmt == "preference":
        assert row["chosen"] == [{"role": "assistant", "content": row["answer"]}]
        assert row["rejected"][0]["role"] == "assistant" and row["rejected"][0]["content"] != row["answer"]


def test_load_task_suite_sizes_and_filters():
    assert len(load_task_suite("train", "sft")) == 300 * len(EXPECTED_DOMAINS)
    ds = load_task_suite("train", "prompt_only", domains=["reversal", "addition"], limit_per_domain=7)
    assert Counter(ds["domain"]) == {"addition": 7, "reversal": 7}
    # Rows keep the snapshot's order: addition comes first there.
    assert ds["domain"][:7] == ["addition"] * 7


@pytest.mark.parametrize(
    "kwargs, listed",
    [
        ({"split": "validation"}, "train, test"),
        ({"fmt": "dpo"}, "sft, preference, prompt_only"),
        ({"domains": ["division"]}, "addition, subtraction"),
        ({"limit_per_domain": 0}, "positive"),
    ],
)
def test_load_task_suite_errors_list_valid_values(kwargs, listed):
    with pytest.raises(ValueError, match=listed):
        load_task_suite(**kwargs)
