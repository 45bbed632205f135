"""The final-answer checker: extraction rules, normalisation, string answers and the GRPO reward wrapper."""

import inspect

import pytest

from alignment.data.answers import accuracy_reward, extract_final_answer, is_correct, normalize_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3 + 4 = 7", "7"),
        ("First 12, then 15. The answer is 27.", "27"),
        ("\\boxed{42}", "42"),
        ("We get \\boxed{3} first, but finally \\boxed{ 1,234 }.", "1234"),
        ("\\boxed{\\text{dcba}}", "dcba"),
        ("#### 1,234", "1234"),
        ("-5", "-5"),
        ("x = -5.", "-5"),
        ("10-5 = 5", "5"),
        ("7.0", "7"),
        ("3.50", "3.5"),
        ("The total is 1,000,000 apples", "1000000"),
        ("Answer: 12. (I double-checked 3 times.)", "12"),
        ("The answer is: **27**", "27"),
        ("The answer is the number 27", "27"),
        ("So the final answer is 8<|im_end|>", "8"),
        ("The reverse of 'abcd' is 'dcba'.", "dcba"),
        ("olleh<|im_end|>", "olleh"),
        ("It's \"olleh\".", "olleh"),
        ("no number here", "here"),
        ("", None),
        ("<|im_end|>", None),
        ("...", None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_extract_prefers_last_marker_over_last_number():
    assert extract_final_answer("The answer is 8, since 3 + 5 = 8 and not 9") == "8"


@pytest.mark.parametrize(
    "raw, expected",
    [(" 42 ", "42"), ("'Dcba'.", "dcba"), ("1,234", "1234"), ("7.00", "7"), ("-0", "0"), ("Three", "3"),
     ("`elppa`", "elppa"), (None, "")],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("We add 3 and 4 to get 7.", "7", True),
        ("7 is not it; the answer is 8", "7", False),
        ("7 is not it; the answer is 8", "8", True),
        ("3 + 4 = 7", "7", True),
        ("The answer is 1,234.", "1234", True),
        ("Three.", "3", True),
        ("12", "21", False),
        ("", "7", False),
        (None, "7", False),
        # String answers: the LAST candidate counts, not any mention.
        ("The reverse of 'abcd' is 'dcba'.", "dcba", True),
        ("The reverse of 'abcd' is 'dcba'.", "abcd", False),
        ("'dcba'", "dcba", True),
        ("DCBA.", "dcba", True),
        ("'apple' has 5 letters; reversed it is elppa", "elppa", True),
        ("Reversed: 'elppa' (5 letters)", "elppa", True),
        ("elppa? No wait, apple", "elppa", False),
        ("The answer is elpap", "elppa", False),
    ],
)
def test_is_correct(completion, answer, expected):
    assert is_correct(completion, answer) is expected


def test_accuracy_reward_on_strings():
    rewards = accuracy_reward(["The answer is 7", "8", "\\boxed{9}"], answer=["7", "7", "9"])
    assert rewards == [1.0, 0.0, 1.0]


def test_accuracy_reward_on_message_lists():
    completions = [
        [{"role": "assistant", "content": "3 + 4 = 7"}],
        [{"role": "assistant", "content": "The reverse of 'abcd' is 'dcba'."}],
        [{"role": "assistant", "content": [{"type": "text", "text": "#### 12"}]}],
        [{"role": "assistant", "content": "no idea"}],
    ]
    rewards = accuracy_reward(completions, answer=["7", "abcd", "12", "5"], prompts=None, domain=["x"] * 4)
    assert rewards == [1.0, 0.0, 1.0, 0.0]
    assert all(isinstance(r, float) for r in rewards)


def test_accuracy_reward_signature_and_length_check():
    params = inspect.signature(accuracy_reward).parameters
    assert list(params)[:2] == ["completions", "answer"]
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        accuracy_reward(["1", "2"], answer=["1"])
