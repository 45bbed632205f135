"""A new per-example dataset column is one registration line beside the loss that reads it (issue 15).

The column and its loss live in a throwaway module written to ``tmp_path`` and imported after `alignment.trainers`,
as a user's own loss file would be: everything that lists the columns must read them when it runs, not at import.
"""

import importlib.util
import sys

import pytest
import torch

import alignment.trainers  # noqa: F401  (imported first on purpose: the column is registered after it)
from alignment.configs import PreferenceConfig
from alignment.losses import (PREFERENCE_LOSSES, PreferenceBatch, compute_preference_loss, preference_columns,
                              register_preference_column, unregister_preference_column, validate_preference_loss)
from alignment.testing import make_preference_trainer as make_trainer
from alignment.testing import preference_pairs as pairs
from alignment.trainers import PreferenceTrainer
from alignment.trainers.preference_batch import model_inputs

SOURCE = "Add it with scripts/annotate_x.py (a throwaway source for this test)."

LOSS_MODULE = f'''
import torch
from alignment.losses import register_preference_column, register_preference_loss

seen = []  # the [B] column of every batch the loss received

register_preference_column("_test_score", source={SOURCE!r})


@register_preference_loss("_test_score_loss", requires=("_test_score",))
def score_loss(batch, *, beta: float = 0.1):
    """DPO's sigmoid loss; logs the column it reads."""
    if not beta > 0:
        raise ValueError(f"`beta` must be a number > 0, got {{beta!r}}.")
    score = batch.columns["_test_score"]
    seen.append((score.detach().clone(), None if batch.margin is None else batch.margin.detach().clone()))
    return -torch.nn.functional.logsigmoid(beta * batch.logratio_margin), {{"score_mean": score}}
'''


@pytest.fixture
def score_module(tmp_path):
    path = tmp_path / "my_score_loss.py"
    path.write_text(LOSS_MODULE)
    spec = importlib.util.spec_from_file_location("_test_my_score_loss", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        if "_test_score_loss" in PREFERENCE_LOSSES:
            PREFERENCE_LOSSES.unregister("_test_score_loss")
        if "_test_score" in preference_columns():
            unregister_preference_column("_test_score")
    assert "_test_score" not in preference_columns()


def _scores(n: int = 8) -> list[float]:
    return [i * i + 0.25 for i in range(n)]  # exact in float32, one value per row, batch means differ


def test_a_registered_column_reaches_the_loss_and_not_the_model(score_module, tiny_model_dir, tmp_path):
    assert preference_columns()[-1] == "_test_score"
    dataset = pairs(_test_score=_scores(), margin=[float(i) for i in range(8)])
    trainer = make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, dataset,
                           loss_type="_test_score_loss", max_steps=2, dataloader_drop_last=True)
    assert "_test_score" in trainer.kept_columns
    model_kwargs = []
    trainer.model.register_forward_pre_hook(lambda module, args, kwargs: model_kwargs.append(set(kwargs)),
                                            with_kwargs=True)
    score_module.seen.clear()  # the start-up validation's one-pair dummy batch
    trainer.train()

    assert len(score_module.seen) == 2 and model_kwargs
    assert all("_test_score" not in keys for keys in model_kwargs)
    for step, (score, margin) in enumerate(score_module.seen):
        assert score.dtype == torch.float32 and score.shape == (4,)
        # each row's own value: the margin column is the row index
        torch.testing.assert_close(score, margin * margin + 0.25, rtol=0, atol=0)
        logged = trainer.state.log_history[step]
        assert logged["score_mean"] == pytest.approx(score.mean().item(), abs=1e-6)
    assert sorted(torch.cat([score for score, _ in score_module.seen]).tolist()) == _scores()
    batch = next(iter(trainer.get_train_dataloader()))
    assert "_test_score" in batch and "_test_score" not in model_inputs(batch)


def test_a_dataset_without_the_column_fails_before_training_quoting_its_source(score_module, tiny_model_dir,
                                                                               tmp_path):
    with pytest.raises(ValueError, match=r"no `_test_score` column.*scripts/annotate_x\.py"):
        make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, pairs(),
                     loss_type="_test_score_loss")
    assert all(score.shape == (1,) for score, _ in score_module.seen)  # at most validation's one-pair dummy batch


def test_the_loss_registry_checks_and_validates_the_registered_column(score_module):
    ones = torch.ones(2)
    batch = PreferenceBatch.from_sequence_logps(-ones, -2 * ones, -ones, -ones)
    with pytest.raises(ValueError, match=r"needs the per-example column\(s\) \['_test_score'\].*annotate_x\.py"):
        compute_preference_loss("_test_score_loss", batch)
    with_column = PreferenceBatch.from_sequence_logps(-ones, -2 * ones, -ones, -ones,
                                                      columns={"_test_score": torch.tensor([1.0, 2.0])})
    _, metrics = compute_preference_loss("_test_score_loss", with_column)
    torch.testing.assert_close(metrics["score_mean"], torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"`columns\['_test_score'\]` must have shape \[2\]"):
        PreferenceBatch.from_sequence_logps(-ones, -2 * ones, -ones, -ones, columns={"_test_score": torch.ones(3)})
    # validation builds its one-pair batch with the column, so the loss's own value checks run at start-up
    validate_preference_loss("_test_score_loss", beta=0.5)
    with pytest.raises(ValueError, match=r"`beta` must be a number > 0"):
        validate_preference_loss("_test_score_loss", beta=0.0)


@pytest.mark.parametrize("name, message", [
    ("_test_score", r"column extra named '_test_score' is already registered"),
    ("margin", r"column extra named 'margin' is already registered"),
    ("log_sum_sq_probs", r"model output extra named 'log_sum_sq_probs' is already registered"),
    ("chosen_logps", r"`PreferenceBatch.chosen_logps` is already a field"),
    ("input_ids", r"`input_ids` is one of the pair's own columns or model inputs"),
])
def test_a_duplicate_column_is_an_error_naming_the_existing_one(score_module, name, message):
    with pytest.raises(ValueError, match=message):
        register_preference_column(name)
    with pytest.raises(ValueError, match=r"required by the registered loss\(es\) \['_test_score_loss'\]"):
        unregister_preference_column("_test_score")
    with pytest.raises(ValueError, match=r"'margin' is not a column declared with register_preference_column"):
        unregister_preference_column("margin")
