import re

import pytest

from alignment.data import is_correct, load_task_suite
from alignment.data.worked import calculation, with_worked_answers, worked

OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_arithmetic_and_story_row_gets_an_expression_that_evaluates_to_its_answer(split):
    rows = load_task_suite(split, "preference", domains=["addition", "subtraction", "multiplication", "word_problem"])
    for row in rows:
        expression = calculation(row["prompt"][0]["content"])
        assert expression is not None, row["prompt"][0]["content"]
        a, op, b = re.fullmatch(r"(\d+) ([+\-*/]) (\d+)", expression).groups()
        assert str(OPS[op](int(a), int(b))) == row["answer"], (expression, row["answer"])


def test_other_domains_keep_bare_answers():
    for row in load_task_suite("test", "preference", domains=["comparison", "counting", "reversal"]):
        assert calculation(row["prompt"][0]["content"]) is None
        assert with_worked_answers(row)["chosen"] == row["chosen"]


def test_worked_pair_contrasts_only_the_result_and_is_scored_like_the_bare_answer():
    row = load_task_suite("test", "preference", domains=["subtraction"])[0]
    new = with_worked_answers(row)
    chosen, rejected = new["chosen"][0]["content"], new["rejected"][0]["content"]
    assert chosen.rsplit(" = ", 1)[0] == rejected.rsplit(" = ", 1)[0]
    assert chosen.endswith(f"= {row['answer']}")
    assert is_correct(chosen, row["answer"]) and not is_correct(rejected, row["answer"])
    assert row["chosen"][0]["content"] == row["answer"], "the input row must not be modified"


def test_worked_hand_cases():
    assert worked("What is 39 - 21? Reply with just the final answer.", "18") == "39 - 21 = 18"
    story = "Liam has 6 bags with 7 cards in each bag. How many cards does Liam have in total?"
    assert worked(story, "42") == "6 * 7 = 42"
    assert worked("Which number is larger: 47 or 52?", "52") == "52"


def _script_args(**overrides):
    from alignment.configs import AlignmentScriptArguments

    return AlignmentScriptArguments(**{"dataset_name": "task-suite", "task_domains": ["addition"], **overrides})


def test_recipe_field_selects_worked_answers_for_both_splits():
    from alignment.data_loading import load_recipe_datasets

    data = load_recipe_datasets(_script_args(task_answer_style="worked"), fmt="preference")
    for split in ("train", "test"):
        row = data[split][0]
        assert row["chosen"][0]["content"].endswith(f"= {row['answer']}") and " + " in row["chosen"][0]["content"]
    plain = load_recipe_datasets(_script_args(), fmt="preference")
    assert plain["train"][0]["chosen"][0]["content"] == plain["train"][0]["answer"]


def test_worked_style_is_validated():
    with pytest.raises(ValueError, match="task_answer_style"):
        _script_args(task_answer_style="verbose")
    from alignment.data_loading import load_recipe_datasets

    with pytest.raises(ValueError, match="preference data only"):
        load_recipe_datasets(_script_args(task_answer_style="worked"), fmt="sft")
