import math

import pytest
import torch

from alignment.losses import (
    PreferenceBatch,
    compute_preference_loss,
    list_preference_losses,
    register_preference_loss,
    validate_preference_loss,
)
from alignment.testing import example_preference_batch as token_batch


def test_sequence_properties_sum_only_completion_tokens():
    batch = token_batch()
    torch.testing.assert_close(batch.chosen_logps_sum, torch.tensor([-0.75, -3.0]))
    torch.testing.assert_close(batch.rejected_logps_sum, torch.tensor([-2.0, -1.0]))
    torch.testing.assert_close(batch.chosen_lengths, torch.tensor([2.0, 3.0]))
    # h = (ℓ_w − ℓ_ref,w) − (ℓ_l − ℓ_ref,l): pair 0: (−0.75+2) − (−2+1) = 2.25; pair 1: (−3+2) − (−1+2) = −2
    torch.testing.assert_close(batch.logratio_margin, torch.tensor([2.25, -2.0]))


def test_sigmoid_hand_computed():
    loss, metrics = compute_preference_loss("sigmoid", token_batch(), beta=0.1)
    expected = torch.tensor([math.log1p(math.exp(-0.225)), math.log1p(math.exp(0.2))])
    torch.testing.assert_close(loss, expected)
    assert metrics == {}


def test_sigmoid_default_beta_is_trl_default():
    batch = token_batch()
    torch.testing.assert_close(compute_preference_loss("sigmoid", batch)[0],
                               compute_preference_loss("sigmoid", batch, beta=0.1)[0])


def test_sigmoid_at_zero_margin_is_log2():
    zeros = torch.zeros(3)
    batch = PreferenceBatch.from_sequence_logps(zeros - 1, zeros - 1, zeros - 1, zeros - 1)
    torch.testing.assert_close(compute_preference_loss("sigmoid", batch)[0], torch.full((3,), math.log(2.0)))


def test_sigmoid_gradient_pushes_chosen_up_and_rejected_down():
    batch = token_batch()
    batch.chosen_logps.requires_grad_(True)
    batch.rejected_logps.requires_grad_(True)
    loss, _ = compute_preference_loss("sigmoid", batch, beta=0.5)
    loss.sum().backward()
    chosen_grad = batch.chosen_logps.grad[batch.chosen_mask.bool()]
    rejected_grad = batch.rejected_logps.grad[batch.rejected_mask.bool()]
    assert (chosen_grad < 0).all(), "descending the loss must raise chosen log-probs"
    assert (rejected_grad > 0).all(), "descending the loss must lower rejected log-probs"
    # Padding positions get no gradient.
    assert (batch.chosen_logps.grad[~batch.chosen_mask.bool()] == 0).all()
    # dL/dℓ_w = −β σ(−β h): check the value, not only the sign.
    h = torch.tensor([2.25, -2.0])
    torch.testing.assert_close(batch.chosen_logps.grad[:, 0], -0.5 * torch.sigmoid(-0.5 * h))


def test_unit_weights_reproduce_unweighted_loss_and_weights_scale():
    plain, _ = compute_preference_loss("sigmoid", token_batch())
    unit, _ = compute_preference_loss("sigmoid", token_batch(weight=torch.ones(2)))
    torch.testing.assert_close(unit, plain, rtol=0, atol=0)
    weighted, _ = compute_preference_loss("sigmoid", token_batch(weight=torch.tensor([2.0, 0.5])))
    torch.testing.assert_close(weighted, plain * torch.tensor([2.0, 0.5]))


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown preference loss_type 'dpoo'.*sigmoid"):
        compute_preference_loss("dpoo", token_batch())


def test_unknown_hparam_is_rejected_with_accepted_names():
    with pytest.raises(ValueError, match=r"does not take \['betta'\].*beta=0.1"):
        compute_preference_loss("sigmoid", token_batch(), betta=0.2)


@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_nonpositive_beta_fails_validation(beta):
    with pytest.raises(ValueError, match="beta"):
        validate_preference_loss("sigmoid", beta=beta)


def test_batch_shape_errors_name_the_field():
    with pytest.raises(ValueError, match="chosen_mask"):
        PreferenceBatch(
            chosen_logps=torch.zeros(2, 3), rejected_logps=torch.zeros(2, 3), ref_chosen_logps=torch.zeros(2, 3),
            ref_rejected_logps=torch.zeros(2, 3), chosen_mask=torch.zeros(2, 4), rejected_mask=torch.zeros(2, 3),
        )
    with pytest.raises(ValueError, match="weight"):
        token_batch(weight=torch.ones(3))


def test_required_extra_column_missing_is_a_clear_error():
    name = "_test_needs_margin"
    if name not in list_preference_losses():

        @register_preference_loss(name, requires=("margin",))
        def _needs_margin(batch, *, beta: float = 0.1):
            return batch.margin * 0 + 1.0, {}

    with pytest.raises(ValueError, match=r"needs the per-example column\(s\) \['margin'\]"):
        compute_preference_loss(name, token_batch())
    loss, _ = compute_preference_loss(name, token_batch(margin=torch.tensor([0.3, -1.0])))
    torch.testing.assert_close(loss, torch.ones(2))


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_preference_loss("sigmoid")(lambda batch: (batch.logratio_margin, {}))


def test_sft_is_length_normalised_chosen_nll():
    loss, metrics = compute_preference_loss("sft", token_batch())
    # chosen sums [-0.75, -3.0] over lengths [2, 3]
    torch.testing.assert_close(loss, torch.tensor([0.375, 1.0]))
    torch.testing.assert_close(metrics["nll/chosen"], loss)


def test_sft_gradient_raises_chosen_and_ignores_rejected():
    batch = token_batch()
    batch.chosen_logps.requires_grad_(True)
    batch.rejected_logps.requires_grad_(True)
    compute_preference_loss("sft", batch)[0].sum().backward()
    mask = batch.chosen_mask.bool()
    # d/dlogp_t of −Σ logp / |y| is −1/|y| on each completion token.
    torch.testing.assert_close(batch.chosen_logps.grad[mask], torch.tensor([-0.5, -0.5, -1 / 3, -1 / 3, -1 / 3]))
    assert batch.rejected_logps.grad is None or (batch.rejected_logps.grad == 0).all()


def test_sft_takes_no_beta():
    with pytest.raises(ValueError, match=r"does not take \['beta'\]"):
        compute_preference_loss("sft", token_batch(), beta=0.1)


def _all_registered_losses():
    import alignment.losses as losses

    return [name for name in losses.list_preference_losses() if not name.startswith("_test")]


@pytest.mark.parametrize("name", _all_registered_losses())
def test_every_loss_composes_with_token_weights(name):
    """All-ones token weights reproduce the unweighted loss exactly; other weights change it (where h matters)."""
    extras = {"margin": torch.tensor([0.5, -1.0]), "chosen_log_sum_sq_probs": torch.full((2, 3), -1.0),
              "rejected_log_sum_sq_probs": torch.full((2, 3), -1.0),
              "empty_trace": torch.tensor([0.0, 1.0]), "preference_prob": torch.tensor([0.7, 0.4]),
              "round_chosen_logps": torch.tensor([-3.0, -1.0]), "round_rejected_logps": torch.tensor([-2.0, -4.0]),
              "chosen_turn_ids": torch.zeros(2, 3, dtype=torch.long),
              "rejected_turn_ids": torch.zeros(2, 3, dtype=torch.long),
              "chosen_token_kl": torch.full((2, 3), 0.25), "rejected_token_kl": torch.full((2, 3), 0.5),
              **{f"{side}_{mask}": torch.ones(2, 3) for side in ("chosen", "rejected")
                 for mask in ("reward_mask", "kl_mask")}}
    plain, _ = compute_preference_loss(name, token_batch(**extras))
    ones = token_batch(**extras, chosen_token_weight=torch.ones(2, 3), rejected_token_weight=torch.ones(2, 3))
    torch.testing.assert_close(compute_preference_loss(name, ones)[0], plain, rtol=0, atol=0)
    halves = token_batch(**extras, chosen_token_weight=torch.full((2, 3), 0.5),
                         rejected_token_weight=torch.full((2, 3), 0.5))
    assert not torch.allclose(compute_preference_loss(name, halves)[0], plain)


def test_token_weights_scale_each_token_log_ratio():
    weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    batch = token_batch(chosen_token_weight=weight)
    # pair 0 keeps only token 0: (−0.5 − (−1.0)) = 0.5; pair 1: 1·(−1 + 0.5) + 2·(−1 + 0.5) = −1.5
    torch.testing.assert_close(batch.chosen_logratios, torch.tensor([0.5, -1.5]))
    # Padding stays out even with a non-zero weight there.
    padded = token_batch(chosen_token_weight=torch.tensor([[1.0, 1.0, 5.0], [1.0, 1.0, 1.0]]))
    torch.testing.assert_close(padded.chosen_logratios, token_batch().chosen_logratios)


# ----------------------------------------------------------------------------- extending the family
NEW_LOSS_FILE = '''
"""A throwaway loss: the whole of what a new method needs (plus its import line in the package __init__)."""

import torch.nn.functional as F

from alignment.losses.registry import register_preference_loss, require_positive


@register_preference_loss("_test_margin_hinge", requires=("margin",))
def margin_hinge_loss(batch, *, beta: float = 0.1):
    """Margin hinge test loss: max(0, margin - beta * logratio margin)."""
    require_positive("beta", beta)
    return F.relu(batch.margin - beta * batch.logratio_margin), {}
'''


def test_a_new_loss_is_one_file(tmp_path):
    import importlib.util

    from alignment.losses import PREFERENCE_LOSSES, get_preference_loss

    path = tmp_path / "margin_hinge.py"
    path.write_text(NEW_LOSS_FILE)
    module_spec = importlib.util.spec_from_file_location("_test_margin_hinge_module", path)
    try:
        module_spec.loader.exec_module(importlib.util.module_from_spec(module_spec))  # what the __init__ import does
        assert "_test_margin_hinge" in list_preference_losses()
        assert get_preference_loss("_test_margin_hinge").requires_columns == ("margin",)
        validate_preference_loss("_test_margin_hinge", beta=0.5)
        with pytest.raises(ValueError, match=r"`beta` must be a number > 0"):
            validate_preference_loss("_test_margin_hinge", beta=0.0)
        batch = token_batch(margin=torch.tensor([10.0, -10.0]))
        loss, _ = compute_preference_loss("_test_margin_hinge", batch, beta=1.0)
        torch.testing.assert_close(loss, torch.relu(batch.margin - batch.logratio_margin))
        with pytest.raises(ValueError, match=r"needs the per-example column\(s\) \['margin'\]"):
            compute_preference_loss("_test_margin_hinge", token_batch())
    finally:
        if "_test_margin_hinge" in PREFERENCE_LOSSES:
            PREFERENCE_LOSSES.unregister("_test_margin_hinge")
    assert "_test_margin_hinge" not in list_preference_losses()


def test_extras_table_is_the_one_source_of_the_column_and_field_lists():
    import dataclasses

    from alignment.losses import EXTRAS, preference_columns
    from alignment.losses.registry import ANNOTATION_EXTRAS, COLUMN_EXTRAS, MODEL_OUTPUT_EXTRAS, REFERENCE_EXTRAS

    # The per-example columns any loss may read: what a trainer keeps in its batches.
    assert preference_columns() == ("margin", "weight", "domain", "empty_trace", "preference_prob",
                                    "round_chosen_logps", "round_rejected_logps") == COLUMN_EXTRAS
    assert set(EXTRAS) == {*COLUMN_EXTRAS, *MODEL_OUTPUT_EXTRAS, *ANNOTATION_EXTRAS, *REFERENCE_EXTRAS}
    batch_fields = {f.name for f in dataclasses.fields(PreferenceBatch)}
    assert all(set(extra.fields) <= batch_fields for extra in EXTRAS.values())
    with pytest.raises(ValueError, match="unknown extras"):
        register_preference_loss("_test_bad_extra", requires=("margins",))(lambda batch: (batch.logratio_margin, {}))
    assert "_test_bad_extra" not in list_preference_losses()
