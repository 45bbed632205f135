import math

import pytest
import torch

from alignment.configs import PreferenceConfig
from alignment.losses import PreferenceBatch, compute_preference_loss
from alignment.token_weightings import (
    compute_token_weights,
    get_token_weighting,
    list_token_weightings,
    register_token_weighting,
    validate_token_weighting,
)
from alignment.trainers import PreferenceTrainer
from alignment.testing import example_preference_batch as token_batch
from alignment.testing import make_preference_trainer as make_trainer
from alignment.testing import perturb_parameters_ as perturb_
from alignment.testing import preference_pairs as pairs



def _logps(probs):
    return torch.tensor(probs, dtype=torch.float32).log()


# ----------------------------------------------------------------------------- registry
def test_builtins_are_registered_and_unknown_name_lists_valid_ones():
    assert {"tldr", "entropy"} <= set(list_token_weightings())
    with pytest.raises(ValueError, match=r"Unknown token_weighting 'tldrr'. Valid names: .*entropy.*tldr"):
        get_token_weighting("tldrr")


def test_unknown_hparam_and_bad_values_are_rejected():
    with pytest.raises(ValueError, match=r"'tldr' does not take \['alpha'\].*detach=True"):
        validate_token_weighting("tldr", alpha=1.0)
    with pytest.raises(ValueError, match=r"`alpha` must be a finite number >= 0"):
        validate_token_weighting("entropy", alpha=-1.0)
    with pytest.raises(ValueError, match=r"`detach` must be a bool"):
        validate_token_weighting("tldr", detach="no")
    with pytest.raises(ValueError, match=r"needs the per-token policy `entropy`"):
        compute_token_weights("entropy", torch.zeros(1, 2), torch.ones(1, 2))


# ----------------------------------------------------------------------------- tldr
def test_tldr_hand_computed_weights():
    # p = 0 (log-prob -inf is not representable: use a tiny p), 0.5, 1, 0.25 -> 2, 1, 0, 1 + cos(π/4)
    logps = _logps([[1e-12, 0.5, 1.0, 0.25]])
    weights = compute_token_weights("tldr", logps, torch.ones(1, 4))
    torch.testing.assert_close(weights, torch.tensor([[2.0, 1.0, 0.0, 1.0 + math.cos(math.pi / 4)]]))
    assert get_token_weighting("tldr").hparams == {"detach": True}


def test_tldr_weights_are_zero_on_padding_and_padding_stays_out_of_sums():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # Padding carries log-prob 0 in the trainer's outputs, but test a non-zero value too: the mask must win.
    logps = torch.tensor([[math.log(0.5), math.log(0.25), -3.0]])
    weights = compute_token_weights("tldr", logps, mask)
    assert weights[0, 2] == 0
    batch = PreferenceBatch(chosen_logps=logps, rejected_logps=logps.clone(), ref_chosen_logps=logps - 1.0,
                            ref_rejected_logps=logps - 1.0, chosen_mask=mask, rejected_mask=mask.clone(),
                            chosen_token_weight=torch.tensor([[1.0, 1.0, 7.0]]))
    # Σ_t w_t (logp − ref) over the two completion tokens only: 1 + 1
    torch.testing.assert_close(batch.chosen_logratios, torch.tensor([2.0]))


def test_tldr_detach_default_blocks_gradient_and_detach_false_follows_the_paper():
    logps = _logps([[0.3, 0.6]]).requires_grad_()
    mask = torch.ones(1, 2)
    assert not compute_token_weights("tldr", logps, mask).requires_grad

    weights = compute_token_weights("tldr", logps, mask, detach=False)
    weights.sum().backward()
    # d/dlogp [1 + cos(π e^logp)] = −π sin(π p) p
    p = torch.tensor([[0.3, 0.6]])
    torch.testing.assert_close(logps.grad, -math.pi * torch.sin(math.pi * p) * p)


# ----------------------------------------------------------------------------- entropy
def test_entropy_weights_average_one_per_sequence_and_are_proportional_to_entropy():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    entropy = torch.tensor([[1.0, 2.0, 3.0, 9.0], [0.5, 1.5, 4.0, 4.0]], requires_grad=True)
    weights = compute_token_weights("entropy", torch.zeros(2, 4), mask, entropy=entropy)
    assert not weights.requires_grad
    torch.testing.assert_close(weights, torch.tensor([[0.5, 1.0, 1.5, 0.0], [0.5, 1.5, 0.0, 0.0]]))
    torch.testing.assert_close((weights * mask).sum(-1) / mask.sum(-1), torch.ones(2))
    # alpha sharpens: w ∝ H²; alpha = 0 gives all-ones; a zero-entropy sequence gets all-ones too.
    squared = compute_token_weights("entropy", torch.zeros(2, 4), mask, entropy=entropy, alpha=2.0)
    torch.testing.assert_close(squared[0, :3], torch.tensor([1.0, 4.0, 9.0]) * 3 / 14)
    torch.testing.assert_close(compute_token_weights("entropy", torch.zeros(2, 4), mask, entropy=entropy, alpha=0.0),
                               mask)
    torch.testing.assert_close(compute_token_weights("entropy", torch.zeros(2, 4), mask, entropy=torch.zeros(2, 4)),
                               mask)


def test_constant_entropy_weights_reproduce_the_unweighted_sigmoid_loss():
    """All-ones weights must reproduce the plain loss exactly; the non-constant case must change it."""
    plain = token_batch()
    mask_c, mask_r = plain.chosen_mask, plain.rejected_mask
    const = torch.full_like(mask_c, 0.7)
    batch = token_batch(
        chosen_token_weight=compute_token_weights("entropy", plain.chosen_logps, mask_c, entropy=const),
        rejected_token_weight=compute_token_weights("entropy", plain.rejected_logps, mask_r, entropy=const),
    )
    expected, _ = compute_preference_loss("sigmoid", plain, beta=0.5)
    torch.testing.assert_close(compute_preference_loss("sigmoid", batch, beta=0.5)[0], expected, rtol=0, atol=0)

    varying = torch.tensor([[0.1, 2.0, 0.0], [3.0, 0.2, 1.0]])
    batch = token_batch(
        chosen_token_weight=compute_token_weights("entropy", plain.chosen_logps, mask_c, entropy=varying),
        rejected_token_weight=compute_token_weights("entropy", plain.rejected_logps, mask_r, entropy=varying),
    )
    assert not torch.allclose(compute_preference_loss("sigmoid", batch, beta=0.5)[0], expected)


# ----------------------------------------------------------------------------- trainer
@register_token_weighting("_test_ones")
def _ones_weights(logps, mask, *, entropy=None):
    return torch.ones_like(logps)


def test_config_parses_json_kwargs_from_the_command_line(tmp_path):
    config = PreferenceConfig(output_dir=str(tmp_path), token_weighting="tldr",
                              token_weighting_kwargs='{"detach": false}', report_to="none", use_cpu=True)
    assert config.token_weighting_kwargs == {"detach": False}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(token_weighting="tdlr"), r"Unknown token_weighting 'tdlr'. Valid names: .*tldr"),
        (dict(token_weighting="tldr", token_weighting_kwargs={"alpha": 2}), r"'tldr' does not take \['alpha'\]"),
        (dict(token_weighting="entropy", token_weighting_kwargs={"alpha": -1}), r"`alpha` must be"),
        (dict(token_weighting_kwargs={"alpha": 2}), r"`token_weighting` is not"),
    ],
)
def test_bad_token_weighting_config_fails_before_training(tiny_model_dir, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, pairs(), **overrides)


def test_trainer_token_weighting_changes_loss_and_all_ones_reproduces_it(tiny_model_dir, tmp_path):
    dataset = pairs()
    # The tiny random model's entropy is ≈ log|V| at every position (spread ~0.1%), so `alpha` amplifies it.
    kwargs = {"entropy": {"alpha": 20.0}}
    trainers = {
        name: make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, dataset,
                           token_weighting=name, token_weighting_kwargs=kwargs.get(name))
        for name in (None, "tldr", "entropy", "_test_ones")
    }
    batch = next(iter(trainers[None].get_train_dataloader()))
    losses = {}
    for name, trainer in trainers.items():
        perturb_(trainer.model)  # same seed: identical policies, all away from their reference
        trainer.model.train()
        losses[name] = trainer.compute_loss(trainer.model, dict(batch))
    assert abs(losses[None].item() - math.log(2.0)) > 1e-3, "policy must differ from reference"
    assert abs(losses["_test_ones"].item() - losses[None].item()) < 1e-6
    assert abs(losses["tldr"].item() - losses[None].item()) > 1e-4
    assert abs(losses["entropy"].item() - losses[None].item()) > 5e-5
    for name in ("tldr", "entropy", "_test_ones"):
        metrics = trainers[name]._metrics["train"]
        mean_chosen, mean_rejected = metrics["token_weight/mean_chosen"][-1], metrics["token_weight/mean_rejected"][-1]
        if name == "tldr":
            assert 0 < mean_chosen < 2 and 0 < mean_rejected < 2
        else:  # entropy weights average 1 per sequence; all-ones average 1
            assert abs(mean_chosen - 1) < 1e-5 and abs(mean_rejected - 1) < 1e-5
    assert "token_weight/mean_chosen" not in trainers[None]._metrics["train"]
    losses["tldr"].backward()  # the weighted loss is differentiable end to end
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainers["tldr"].model.parameters())


def test_training_with_tldr_logs_weight_means(tiny_model_dir, tmp_path):
    trainer = make_trainer(PreferenceTrainer, PreferenceConfig, tiny_model_dir, tmp_path, pairs(),
                           token_weighting="tldr", max_steps=1)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert 0 < logged["token_weight/mean_chosen"] <= 2 and 0 < logged["token_weight/mean_rejected"] <= 2
    assert math.isfinite(logged["loss"])


# ----------------------------------------------------------------------------- extending the family
NEW_WEIGHTING_FILE = '''
"""A throwaway token weighting: the whole of what a new method needs (plus its import line in the package __init__)."""

import torch

from alignment.token_weightings.registry import register_token_weighting


@register_token_weighting("_test_position")
def position_weights(logps, mask, *, entropy=None, decay: float = 0.5):
    """Position test weighting: w_t = decay ** t, earlier tokens weigh more."""
    positions = torch.arange(logps.shape[1], dtype=logps.dtype).expand_as(logps)
    return decay ** positions
'''


def test_a_new_token_weighting_is_one_file(tmp_path):
    import importlib.util

    from alignment.token_weightings import TOKEN_WEIGHTINGS

    path = tmp_path / "position.py"
    path.write_text(NEW_WEIGHTING_FILE)
    module_spec = importlib.util.spec_from_file_location("_test_position_module", path)
    try:
        module_spec.loader.exec_module(importlib.util.module_from_spec(module_spec))  # what the __init__ import does
        assert "_test_position" in list_token_weightings()
        assert get_token_weighting("_test_position").hparams == {"decay": 0.5}
        validate_token_weighting("_test_position", decay=0.25)
        weights = compute_token_weights("_test_position", torch.zeros(1, 3), torch.tensor([[1.0, 1.0, 0.0]]))
        torch.testing.assert_close(weights, torch.tensor([[1.0, 0.5, 0.0]]))
        with pytest.raises(ValueError, match=r"'_test_position' does not take \['alpha'\].*decay=0.5"):
            validate_token_weighting("_test_position", alpha=1.0)
    finally:
        if "_test_position" in TOKEN_WEIGHTINGS:
            TOKEN_WEIGHTINGS.unregister("_test_position")
    assert "_test_position" not in list_token_weightings()


def test_a_weighting_must_take_entropy_and_require_known_outputs():
    with pytest.raises(ValueError, match="keyword-only `entropy`"):
        register_token_weighting("_test_no_entropy")(lambda logps, mask: logps)
    with pytest.raises(ValueError, match="unknown outputs"):
        register_token_weighting("_test_bad_output", requires=("hidden",))(lambda logps, mask, *, entropy=None: logps)
    assert not {"_test_no_entropy", "_test_bad_output"} & set(list_token_weightings())
