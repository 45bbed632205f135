"""Policy-loss and aggregation registries (`alignment.policy_losses`), the removed clipping flags.

Expected values are computed here by hand, never read back from the code under test. The trainer-level checks (our
path equals TRL's loss, HAPO trains and logs, start-up errors) are in `test_group_rl_trainer.py`.
"""

from __future__ import annotations

import pytest
import torch

from alignment.configs import GroupRLConfig
from alignment.policy_losses import AGGREGATIONS, POLICY_LOSSES, aggregate, validate_policy_loss
from alignment.testing import trainer_test_args


def test_registries_list_the_built_in_entries():
    assert {"clipped", "sign_clipped", "hapo"} <= set(POLICY_LOSSES.names())
    assert AGGREGATIONS.names() == ["bnpo", "dapo", "dr_grpo", "grpo"]
    assert POLICY_LOSSES.get("sign_clipped").hparams == {}
    assert POLICY_LOSSES.get("clipped").inputs == ("ratio", "advantages", "epsilon_low", "epsilon_high")
    assert "entropy_pivot=0.8" in POLICY_LOSSES.describe()


@pytest.mark.parametrize("name, hparams, message", [
    ("ppo", {}, "Valid names: clipped"),
    ("clipped", {"beta": 1.0}, "does not take"),
    ("hapo", {"entropy_pivot": 0.0}, "entropy_pivot"),
    ("hapo", {"clip_alpha": -0.5}, "clip_alpha"),
    ("hapo", {"adaptive_clip": "yes"}, "adaptive_clip"),
])
def test_validate_rejects_bad_configurations(name, hparams, message):
    with pytest.raises(ValueError, match=message):
        validate_policy_loss(name, hparams)


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
