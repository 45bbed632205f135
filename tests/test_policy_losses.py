"""Policy-loss and aggregation registries (`alignment.policy_losses`), APA's formula, the removed clipping flags.

Expected values are computed here by hand, never read back from the code under test. The trainer-level checks (our
path equals TRL's loss, HAPO trains and logs, start-up errors) are in `test_group_rl_trainer.py`.
"""

from __future__ import annotations

import pytest
import torch

from alignment.configs import GroupRLConfig
from alignment.policy_losses import AGGREGATIONS, POLICY_LOSSES, aggregate, compute_policy_loss, validate_policy_loss
from alignment.testing import trainer_test_args


def test_registries_list_the_built_in_entries():
    assert {"clipped", "sign_clipped", "hapo", "apa"} <= set(POLICY_LOSSES.names())
    assert AGGREGATIONS.names() == ["bnpo", "dapo", "dr_grpo", "grpo"]
    assert POLICY_LOSSES.get("apa").hparams == {"lam": 0.1, "reference": "old"}
    assert POLICY_LOSSES.get("clipped").inputs == ("ratio", "advantages", "epsilon_low", "epsilon_high")
    assert "entropy_pivot=0.8" in POLICY_LOSSES.describe()


@pytest.mark.parametrize("name, hparams, message", [
    ("ppo", {}, "Valid names: apa, clipped"),
    ("apa", {"beta": 1.0}, "does not take"),
    ("apa", {"lam": -1.0}, "`lam` must be a number > 0"),
    ("apa", {"reference": "ref"}, "`reference` must be one of"),
    ("hapo", {"entropy_pivot": 0.0}, "entropy_pivot"),
    ("hapo", {"clip_alpha": -0.5}, "clip_alpha"),
    ("hapo", {"adaptive_clip": "yes"}, "adaptive_clip"),
])
def test_validate_rejects_bad_configurations(name, hparams, message):
    with pytest.raises(ValueError, match=message):
        validate_policy_loss(name, hparams)


def test_apa_with_the_initial_policy_needs_reference_log_probs():
    validate_policy_loss("apa", {"reference": "init"}, reference_logps=True)
    validate_policy_loss("apa", {}, reference_logps=False)  # the code's log-ratio needs no reference model
    with pytest.raises(ValueError, match="beta"):
        validate_policy_loss("apa", {"reference": "init"}, reference_logps=False)


def test_unknown_aggregation_lists_the_valid_loss_types():
    with pytest.raises(ValueError, match="bnpo, dapo, dr_grpo, grpo"):
        aggregate("sapo", torch.zeros(1, 1), torch.ones(1, 1), accumulation=1.0)


def test_aggregations_hand_values():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    inputs = dict(accumulation=2.0, max_completion_length=5, num_items_in_batch=torch.tensor(8.0), num_processes=2,
                  generation_steps=4)
    # grpo: mean of (6/3, 4/1) = 3; bnpo: 10/4; dr_grpo: 10/(2*5); dapo: 10 / (8/2 * 2/4); each / accumulation 2
    # except dapo, whose normaliser carries it.
    assert aggregate("grpo", loss, mask, **inputs).item() == pytest.approx(1.5)
    assert aggregate("bnpo", loss, mask, **inputs).item() == pytest.approx(1.25)
    assert aggregate("dr_grpo", loss, mask, **inputs).item() == pytest.approx(0.5)
    assert aggregate("dapo", loss, mask, **inputs).item() == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------- APA
def _apa(advantage, *, reference="old", lam=0.1):
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -2.0]])
    ref = torch.tensor([[-0.5, -2.5]])
    loss, metrics = compute_policy_loss("apa", {"lam": lam, "reference": reference}, per_token_logps=logps,
                                        old_per_token_logps=old, ref_per_token_logps=ref,
                                        advantages=torch.tensor([[advantage]]))
    loss.sum().backward()
    return loss.detach(), logps.grad, metrics


def test_apa_hand_values_and_gradient_sign():
    # log-ratio to pi_old = (0.5, 0.0); A / lam = 0.2 / 0.1 = 2: loss (0.5 - 2)^2, (0 - 2)^2; grad 2 (log-ratio - 2).
    loss, grad, metrics = _apa(0.2)
    assert torch.allclose(loss, torch.tensor([[2.25, 4.0]]))
    assert torch.allclose(grad, torch.tensor([[-3.0, -4.0]]))  # descent raises the log-prob of an A > 0 token
    assert torch.allclose(metrics["apa/log_ratio_mean"], torch.tensor([[0.5, 0.0]]))
    loss, grad, _ = _apa(-0.2)
    assert torch.allclose(loss, torch.tensor([[6.25, 4.0]]))
    assert torch.allclose(grad, torch.tensor([[5.0, 4.0]]))  # and lowers it for A < 0


def test_apa_paper_form_regresses_on_the_initial_policy():
    # log-ratio to pi_init = (-0.5, 0.5); A / lam = 0.2 / 0.5 = 0.4: loss 0.81, 0.01; grad 2 (log-ratio - 0.4).
    loss, grad, _ = _apa(0.2, reference="init", lam=0.5)
    assert torch.allclose(loss, torch.tensor([[0.81, 0.01]]))
    assert torch.allclose(grad, torch.tensor([[-1.8, 0.2]]))  # above the target A / lam the token is pushed down


def test_apa_minimum_is_at_advantage_over_lambda():
    logps = torch.tensor([[0.3]], requires_grad=True)
    loss, _ = compute_policy_loss("apa", {"lam": 0.5}, per_token_logps=logps, old_per_token_logps=torch.zeros(1, 1),
                                  ref_per_token_logps=None, advantages=torch.tensor([[0.15]]))
    loss.sum().backward()
    assert loss.item() == pytest.approx(0.0) and logps.grad.item() == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------- removed flags
@pytest.mark.parametrize("flags, replacement", [
    ({"clip_by_advantage_sign": True}, "`policy_loss: sign_clipped`"),
    ({"hapo_adaptive_clip": True, "hapo_clip_alpha": 2.0},
     '`policy_loss: hapo` and `policy_loss_kwargs: {"adaptive_clip": true, "clip_alpha": 2.0, '
     '"advantage_redistribution": false}`'),
    ({"hapo_advantage_redistribution": "true", "clip_by_advantage_sign": "true"},  # command-line strings
     '"by_advantage_sign": true, "advantage_redistribution": true, "adaptive_clip": false'),
    ({"hapo_adv_beta": 0.5}, "nothing"),
])
def test_removed_clipping_flags_name_their_replacement(tmp_path, flags, replacement):
    with pytest.raises(ValueError, match="removed") as error:
        GroupRLConfig(**trainer_test_args(tmp_path, **flags))
    assert replacement in str(error.value)
    assert all(f"`{name}`" in str(error.value) for name in flags)
