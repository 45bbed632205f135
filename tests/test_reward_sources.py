"""Rewards from anywhere (`alignment.rewards.sources`) and the math-verify reward (`alignment.rewards.math_verify`).

Expected values are written by hand or computed here with the model itself, never read back from the code under test.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from alignment.configs import GroupRLConfig
from alignment.data import load_task_suite
from alignment.rewards.sources import (
    RewardModelReward,
    RewardResolutionError,
    SourcedReward,
    check_reward,
    resolve_reward,
    resolve_rewards,
)
from alignment.rewards import get_reward_function
from alignment.testing import trainer_test_args
from alignment.trainers.group_rl import GroupRLTrainer

G = 4
REWARD_FILE = """
def length_penalty(completions, *, scale=1.0, **kwargs):
    text = lambda c: c if isinstance(c, str) else c[-1]["content"]
    return [-scale * len(text(c)) for c in completions]


def needs_hint(completions, hint, **kwargs):  # reads a `hint` column
    return [float(h == "x") for h in hint]


def no_kwargs(completions):
    return [0.0] * len(completions)
"""


@pytest.fixture
def reward_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARD_FILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield path
    sys.modules.pop("my_rewards", None)


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory, tiny_model_dir) -> str:
    """A tiny sequence classifier with num_labels=1 (what scripts/run_reward.py saves), random score head."""
    path = tmp_path_factory.mktemp("tiny-rm") / "tiny-rm"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


# ---------------------------------------------------------------------------------------------- math-verify reward
# Completion, gold, whether it is right. The old string checker (`accuracy_reward`) scores every one of them 0.
LATEX_CASES = [
    (r"The answer is $\boxed{\frac12}$.", "0.5", 1.0),
    (r"So the probability is $\dfrac{3}{4}$.", "0.75", 1.0),
    (r"Simplifying, $\boxed{2\sqrt2}$", r"\sqrt{8}", 1.0),
    (r"That is $\boxed{50\%}$ of the total.", "0.5", 1.0),
    (r"Solving gives $\boxed{x=3}$", "3", 1.0),
    (r"The area is $\boxed{12\text{ cm}^2}$", "12", 1.0),
    (r"The roots are $\boxed{-2, 3}$", "3, -2", 1.0),
    (r"Hence the answer is $\boxed{2^{10}}$", "1024", 1.0),
    # 1/3 and 0.3333 differ in the 5th decimal; math-verify compares to 6 decimals, so this one is wrong.
    (r"The answer is $\boxed{\frac{1}{3}}$", "0.3333", 0.0),
]


def test_math_verify_reward_on_latex_answers_where_accuracy_reward_fails():
    completions = [c for c, _, _ in LATEX_CASES]
    golds = [g for _, g, _ in LATEX_CASES]
    math_reward = get_reward_function("math_verify_reward")
    assert math_reward(prompts=None, completions=completions, answer=golds) == [e for _, _, e in LATEX_CASES]
    # The string checker reads "12", "3", "1024" after the marker or the last number and still misses them all.
    assert get_reward_function("accuracy_reward")(completions=completions, answer=golds) == [0.0] * len(golds)


def test_trl_accuracy_reward_is_not_reused_because_it_misses_these():
    # Why math_verify_reward is its own function: TRL 1.16's reward (open-r1's settings) needs an anchor, turns off the
    # `\frac12` fix and cannot parse a bare LaTeX gold. Same completions as above, conversational as TRL requires.
    from trl.rewards import accuracy_reward as trl_accuracy

    completions = [[{"role": "assistant", "content": c}] for c, _, _ in LATEX_CASES[:3]]
    assert trl_accuracy(completions, [g for _, g, _ in LATEX_CASES[:3]]) == [0.0, 0.0, None]


def test_math_verify_reward_wrong_answers_gold_columns_and_unparseable_gold():
    reward = get_reward_function("math_verify_reward")
    conversational = [[{"role": "assistant", "content": r"\boxed{\frac13}"}], "7", "no number here", "7"]
    # `solution` wins over `answer`; a wrong value, no answer at all and an unparseable gold (None: TRL skips it).
    solution = ["0.5", "7", "7", "a word"]
    answer = ["1/3", "8", "8", "7"]
    assert reward(completions=conversational, solution=solution, answer=answer) == [0.0, 1.0, 0.0, None]
    assert reward(completions=conversational, answer=answer) == [1.0, 0.0, 0.0, 1.0]  # \frac13 = 1/3
    with pytest.raises(ValueError, match=r"`solution` or `answer` column, and the dataset has neither "
                                         r"\(columns: \['domain'\]"):
        reward(completions=["7"], domain=["x"])


def test_math_verify_reward_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install 'alignment-toolkit\[math\]'"):
        get_reward_function("math_verify_reward")


# ---------------------------------------------------------------------------------------------- resolver
def test_file_and_import_path_rewards_get_their_kwargs_and_a_stable_name(reward_file):
    expected = [-1.0 * 2.0 * 3]  # scale 2, "abc"
    for spec in ("my_rewards.py:length_penalty", str(reward_file) + ":length_penalty", "./my_rewards.py:length_penalty",
                 "my_rewards:length_penalty", "my_rewards.length_penalty"):
        reward = resolve_reward(spec, scale=2.0)
        assert isinstance(reward, SourcedReward) and reward.__name__ == "length_penalty"
        assert reward(prompts=["q"], completions=["abc"]) == expected
        # Picklable by spec (TRL's async rollout worker pickles rewards), also for a file no module name reaches.
        assert pickle.loads(pickle.dumps(reward))(prompts=["q"], completions=["abc"]) == expected
    # A registry name is today's registered reward.
    assert resolve_reward("overlong_penalty", max_length=4, cache_length=2).__name__ == "overlong_penalty"


def test_bad_kwargs_and_signatures_fail_at_resolution(reward_file):
    with pytest.raises(ValueError, match=r"does not take \['scal'\]"):
        resolve_reward("my_rewards.py:length_penalty", scal=2.0)
    with pytest.raises(ValueError, match=r"must take `\*\*kwargs`"):
        resolve_reward("my_rewards.py:no_kwargs")
    with pytest.raises(ValueError, match="not in `reward_funcs`"):
        resolve_rewards(["accuracy_reward"], {"my_rewards.py:length_penalty": {"scale": 1.0}})
    with pytest.raises(ValueError, match=r"both named \['length_penalty'\]"):
        resolve_rewards(["my_rewards.py:length_penalty", "my_rewards:length_penalty"])


def test_unresolvable_reward_lists_what_was_tried_and_the_valid_forms(reward_file):
    with pytest.raises(RewardResolutionError) as error:
        resolve_reward("accuracy_rewrd")
    message = str(error.value)
    assert "did you mean 'accuracy_reward'" in message
    assert "not a directory or a Hub id" in message
    for form in ("accuracy_reward, format_reward", "`pkg.module.fn`", "`pkg.module:fn`", "`path/to/file.py:fn`",
                 "AutoModelForSequenceClassification"):
        assert form in message
    with pytest.raises(RewardResolutionError, match="my_rewards.py defines no `lenght`"):
        resolve_reward("my_rewards.py:lenght")
    with pytest.raises(RewardResolutionError, match="missing.py does not exist"):
        resolve_reward("missing.py:fn")
    with pytest.raises(RewardResolutionError, match="module my_rewards has no `lenght`"):
        resolve_reward("my_rewards:lenght")


def test_check_reward_calls_once_on_the_first_example(reward_file):
    needs_hint = resolve_reward("my_rewards.py:needs_hint")
    check_reward(needs_hint, {"prompt": [{"role": "user", "content": "q"}], "hint": "x"})
    with pytest.raises(ValueError, match="reward 'needs_hint' failed its start-up call on the first example"):
        check_reward(needs_hint, {"prompt": "q", "answer": "1"})  # no `hint` column
    # Without an example, a dummy one: "1" for each column the function names (as the registry's check does).
    assert [r.__name__ for r in resolve_rewards(["accuracy_reward", "my_rewards.py:needs_hint"])] == [
        "accuracy_reward", "needs_hint"]


def test_reward_model_scores_prompt_plus_completion_like_trl(reward_model_dir):
    reward = resolve_reward(reward_model_dir + "/", batch_size=2)
    assert isinstance(reward, RewardModelReward) and reward.__name__ == "tiny-rm"
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_model_dir)

    def by_hand(text):
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            return model(**ids).logits[0, 0].item()

    plain = reward(prompts=["3 + 4 =", "1 + 1 ="], completions=[" 7", " 2 is the answer"])
    assert plain == pytest.approx([by_hand("3 + 4 = 7"), by_hand("1 + 1 = 2 is the answer")], abs=1e-5)
    prompts = [[{"role": "user", "content": "What is 3 + 4?"}]] * 3
    completions = [[{"role": "assistant", "content": c}] for c in ("7", "seven", "12")]
    chat = tokenizer.apply_chat_template
    expected = [by_hand(chat(p + c, tokenize=False)) for p, c in zip(prompts, completions)]
    assert reward(prompts=prompts, completions=completions) == pytest.approx(expected, abs=1e-5)
    assert len(set(round(x, 6) for x in expected)) == 3  # the texts differ, so must the scores


def test_causal_lm_directory_is_not_a_reward_model(tiny_model_dir):
    with pytest.raises(RewardResolutionError, match="not a reward model"):
        resolve_reward(tiny_model_dir)


# ---------------------------------------------------------------------------------------------- GRPO end to end
def test_grpo_step_with_registry_file_and_reward_model_rewards(tiny_model_dir, reward_model_dir, reward_file, tmp_path):
    prompts = load_task_suite("train", "prompt_only", domains=["addition"], limit_per_domain=8)
    file_spec = "./my_rewards.py:length_penalty"
    config = GroupRLConfig(**trainer_test_args(
        tmp_path / "run", num_generations=G, max_completion_length=6, per_device_train_batch_size=G, max_steps=1,
        reward_funcs=["accuracy_reward", file_spec, reward_model_dir],
        reward_kwargs={file_spec: {"scale": 0.5}}, reward_weights=[1.0, 0.1, 1.0]))
    trainer = GroupRLTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=config,
                             train_dataset=prompts, processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    assert trainer.reward_func_names == ["accuracy_reward", "length_penalty", "tiny-rm"]
    trainer.train()
    logs = trainer.state.log_history[0]
    for name in trainer.reward_func_names:
        assert f"rewards/{name}/mean" in logs
    completions = list(trainer._logs["completion"])
    logged = trainer._logs["rewards"]
    assert len(completions) == G
    # The file reward got its kwarg (scale 0.5) and the reward model was scored by TRL exactly as our callable does.
    assert list(logged["length_penalty"]) == [-0.5 * len(c[-1]["content"]) for c in completions]
    ours = resolve_reward(reward_model_dir)(prompts=list(trainer._logs["prompt"]), completions=completions)
    assert list(logged["tiny-rm"]) == pytest.approx(ours, abs=1e-4)


def test_grpo_reward_that_breaks_on_the_first_example_fails_before_training(tiny_model_dir, reward_file, tmp_path):
    prompts = load_task_suite("train", "prompt_only", domains=["addition"], limit_per_domain=8)
    config = GroupRLConfig(**trainer_test_args(tmp_path, num_generations=G, max_completion_length=6,
                                               per_device_train_batch_size=G, max_steps=1,
                                               reward_funcs=["my_rewards.py:needs_hint"]))
    with pytest.raises(ValueError, match="needs_hint' failed its start-up call"):
        GroupRLTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=config,
                       train_dataset=prompts, processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))


def test_recipe_config_checks_reward_strings_before_any_model_loads(tiny_model_dir, reward_model_dir, reward_file,
                                                                    tmp_path, monkeypatch):
    import alignment.modeling.reward_model

    def no_weights(*args, **kwargs):
        raise AssertionError("the config check must not load a reward model's weights")

    monkeypatch.setattr(alignment.modeling.reward_model, "load_reward_model", no_weights)
    args = trainer_test_args(tmp_path, num_generations=G, per_device_train_batch_size=G)
    config = GroupRLConfig(**args, reward_funcs=["accuracy_reward", reward_model_dir, "my_rewards.py:length_penalty"],
                           reward_kwargs={reward_model_dir: {"batch_size": 8}})
    assert config.reward_funcs[1] == reward_model_dir
    for funcs, kwargs, message in [
        (["missing.py:fn"], {}, "missing.py does not exist"),
        ([tiny_model_dir], {}, "not a reward model: it has num_labels=2"),
        ([reward_model_dir], {reward_model_dir: {"batch": 8}}, r"does not take \['batch'\]"),
        ([reward_model_dir], {reward_model_dir: {"dtype": "bf16"}}, "`dtype` must name a torch dtype"),
        (["my_rewards.py:length_penalty"], {"my_rewards.py:length_penalty": {"scal": 1}}, "does not take"),
    ]:
        with pytest.raises(ValueError, match=message):
            GroupRLConfig(**args, reward_funcs=funcs, reward_kwargs=kwargs)
