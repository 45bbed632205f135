"""DGA (arXiv 2410.02498) and ScaleBiO (arXiv 2406.19976) as domain-weight rules: the update against transcriptions of
the paper's equations (DGA) and of the official code's λ step (ScaleBiO, `python/samp_p.py` + `python/minmax.py`),
limits, direction, bad input, and a 3-step online SFT run with each recipe.

Expected values are computed independently of `alignment.domain_rules`: plain Python floats for DGA, autograd through
a copy of the official `SampProb` module and `torch.optim.AdamW` (the official λ optimizer) or `torch.optim.SGD` for
ScaleBiO.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch

from alignment.commands import cli
from alignment.domain_rules import (DomainWeightState, get_domain_update, list_domain_updates, update_domain_state,
                                    update_domain_weights, validate_domain_update)
from alignment.domain_rules.scalebio import softmax_logit_gradient
from alignment.trainers import domain_gradients
from alignment.trainers.domain_reweighting import OnlineDomainWeights

ROOT = Path(__file__).resolve().parents[1]


def _close(tensor, expected, tol=1e-9):
    values = torch.as_tensor(tensor, dtype=torch.float64).tolist()
    assert values == pytest.approx(list(expected), abs=tol), (values, expected)


def test_both_rules_are_registered_with_target_domains_required():
    assert {"dga", "scalebio"} <= set(list_domain_updates())
    assert get_domain_update("dga").required_hparams == ("target_domains",)
    assert get_domain_update("dga").hparams == {"step_size": 1.0, "ema": 0.1, "target_share": 0.0}
    assert get_domain_update("scalebio").required_hparams == ("target_domains",)
    assert get_domain_update("scalebio").hparams == {"step_size": 1e-2, "penalty": 10.0, "target_share": 0.0,
                                                     "optimizer": "adamw", "betas": None, "eps": None,
                                                     "weight_decay": None}
    assert get_domain_update("scalebio").buffers == ("exp_avg", "exp_avg_sq", "adamw_step")


# ---------------------------------------------------------------------------------------------------------- DGA
def _dga_by_hand(weights, grads, targets, eta, beta, share):
    """The paper's equations, in floats: a_i = <g_i, g_spe>; α̂ ∝ α·exp(η a); α' = (1 − β)α + βα̂; targets get s."""
    k = len(weights)
    generic = [i for i in range(k) if i not in targets]
    g_spe = [sum(grads[j][p] for j in targets) / len(targets) for p in range(len(grads[0]))]
    total = sum(weights[i] for i in generic)
    alpha = {i: weights[i] / total for i in generic}
    a = {i: sum(x * y for x, y in zip(grads[i], g_spe)) for i in generic}
    z = sum(alpha[i] * math.exp(eta * a[i]) for i in generic)
    out = [0.0] * k
    for i in generic:
        out[i] = (1 - share) * ((1 - beta) * alpha[i] + beta * alpha[i] * math.exp(eta * a[i]) / z)
    for j in targets:
        out[j] = share / len(targets)
    return out


STEP_GRADS = [  # three update steps, K = 4 domains, P = 3; domain 1 is the specialised set
    [[1.0, 0.0, 0.5], [0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [-0.5, 0.0, 1.0]],
    [[0.2, 0.1, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.0]],
    [[0.0, 0.0, 1.0], [0.3, -0.4, 0.5], [0.5, 0.5, 0.5], [-1.0, 1.0, 0.0]],
]


def test_dga_three_steps_equal_the_papers_equations():
    weights = [0.1, 0.4, 0.2, 0.3]
    expected = weights
    hp = dict(target_domains=[1], step_size=0.7, ema=0.3, target_share=0.1)
    for step, grads in enumerate(STEP_GRADS):
        weights = update_domain_weights("dga", torch.tensor(weights, dtype=torch.float64), step=step,
                                        grads=torch.tensor(grads, dtype=torch.float64), **hp).tolist()
        expected = _dga_by_hand(expected, grads, [1], eta=0.7, beta=0.3, share=0.1)
        _close(weights, expected)
    # e.g. step 1 by hand: a = (0.8, ·, 0.2, −0.4) on the generic (0.1, 0.2, 0.3)/0.6, then the EMA and s = 0.1
    assert weights[1] == pytest.approx(0.1)


def test_dga_two_steps_by_hand_pin_the_ema_placement():
    # K = 3, target 2, g_0·g_2 = ln 2 and g_1·g_2 = 0, so with η = 1 the EG factors are exactly 2 and 1; β = 1/2.
    grads = torch.tensor([[1.0, 0.0], [0.0, 1.0], [math.log(2.0), 0.0]], dtype=torch.float64)
    hp = dict(target_domains=[2], step_size=1.0, ema=0.5)
    # step 1: α̂ = (½·2, ½·1)/(3/2) = (2/3, 1/3); α = ½(½, ½) + ½(2/3, 1/3) = (7/12, 5/12).
    w1 = update_domain_weights("dga", torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64), step=0, grads=grads, **hp)
    _close(w1, [7 / 12, 5 / 12, 0.0], tol=1e-12)
    # step 2 starts the EG step from the EMA (one weight sequence): α̂ = (7/12·2, 5/12)/(19/12) = (14/19, 5/19);
    # α = ½(7/12, 5/12) + ½(14/19, 5/19) = (301/456, 155/456).
    w2 = update_domain_weights("dga", w1, step=1, grads=grads, **hp)
    _close(w2, [301 / 456, 155 / 456, 0.0], tol=1e-12)
    # The other reading (a raw EG sequence 2/3 -> 4/5, averaged separately: ½·7/12 + ½·4/5 = 83/120) differs by 0.03.
    assert abs(w2[0].item() - 83 / 120) > 0.03


def test_dga_several_target_domains_use_their_mean_gradient():
    grads = [[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 4.0]]
    new = update_domain_weights("dga", torch.full((4,), 0.25, dtype=torch.float64), step=0, grads=torch.tensor(grads),
                                target_domains=[2, 3], step_size=0.3, ema=1.0, target_share=0.2)
    _close(new, _dga_by_hand([0.25] * 4, grads, [2, 3], eta=0.3, beta=1.0, share=0.2))
    assert new[2] == new[3] == pytest.approx(0.1)


def test_dga_limits():
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)  # target 2 already holds its share 0.5
    grads = torch.tensor(STEP_GRADS[0][:3])
    # η -> 0: the EG step is the identity, so the weights stay (whatever β).
    kept = update_domain_weights("dga", weights, step=0, grads=grads, target_domains=[2], step_size=1e-12, ema=0.7,
                                 target_share=0.5)
    _close(kept, weights.tolist(), tol=1e-12)
    # β = 1 (no EMA): the plain exponentiated-gradient step softmax(log α + η a) on the generic domains.
    plain = update_domain_weights("dga", weights, step=0, grads=grads, target_domains=[2], step_size=2.0, ema=1.0,
                                  target_share=0.5)
    a = grads[:2].double() @ grads[2].double()
    eg = torch.softmax(torch.log(weights[:2] / weights[:2].sum()) + 2.0 * a, dim=0)
    _close(plain[:2], (0.5 * eg).tolist())
    # β interpolates linearly between the previous weights (β -> 0) and the plain step (β = 1).
    half = update_domain_weights("dga", weights, step=0, grads=grads, target_domains=[2], step_size=2.0, ema=0.25,
                                 target_share=0.5)
    _close(half, (0.75 * weights + 0.25 * plain).tolist())


def test_dga_domain_most_aligned_with_the_target_gains_weight():
    # g_0 along the target, g_1 orthogonal, g_2 against it: 0 gains, 2 loses, 1 only follows the normalisation.
    grads = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
    weights = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    new = update_domain_weights("dga", weights, step=0, grads=grads, target_domains=[3], ema=0.5)
    assert new[0] > 1 / 3 > new[2]
    assert new[3] == 0.0  # target_share 0: the paper never trains on the specialised set
    # Repeated steps: the EMA makes the move geometric, the aligned domain keeps gaining.
    for step in range(1, 5):
        newer = update_domain_weights("dga", new, step=step, grads=grads, target_domains=[3], ema=0.5)
        assert newer[0] > new[0] and newer[2] < new[2]
        new = newer


@pytest.mark.parametrize("hparams, match", [
    ({}, "target_domains"),
    ({"target_domains": []}, "target_domains"),
    ({"target_domains": "2"}, "target_domains"),
    ({"target_domains": [1, 1]}, "distinct"),
    ({"target_domains": [1.5]}, "integer"),
    ({"target_domains": [1], "ema": 0.0}, "ema"),
    ({"target_domains": [1], "ema": 1.5}, "ema"),
    ({"target_domains": [1], "step_size": -1.0}, "step_size"),
    ({"target_domains": [1], "target_share": 1.0}, "target_share"),
    ({"target_domains": [1], "mu": 0.1}, "mu"),
])
def test_dga_bad_hyper_parameters_fail_at_validation(hparams, match):
    with pytest.raises(ValueError, match=match):
        validate_domain_update("dga", **hparams)


def test_dga_bad_inputs_fail_with_the_field():
    weights = torch.full((3,), 1 / 3, dtype=torch.float64)
    grads = torch.ones(3, 2)
    with pytest.raises(ValueError, match=r"distinct indices in \[0, 3\)"):
        update_domain_weights("dga", weights, step=0, grads=grads, target_domains=[3])
    with pytest.raises(ValueError, match="no training domain"):
        update_domain_weights("dga", weights, step=0, grads=grads, target_domains=[0, 1, 2])
    with pytest.raises(ValueError, match=r"\[K, P\] = \[3, P\]"):
        update_domain_weights("dga", weights, step=0, grads=torch.ones(2, 2), target_domains=[0])
    with pytest.raises(ValueError, match="needs"):
        update_domain_weights("dga", weights, step=0, grads=grads)


# ------------------------------------------------------------------------------------------------------ ScaleBiO
class SampProb(torch.nn.Module):
    """The official `python/samp_p.py` (2003pro/ScaleBiO), retyped: p = softmax(λ), loss = Σ_b p[c_b]/n_{c_b}·ℓ_b."""

    def __init__(self, logits):
        super().__init__()
        self.p = torch.nn.Parameter(logits.clone())

    def forward(self, per_sample_loss, per_sample_category):
        samp_prob = torch.softmax(self.p, dim=0)
        w = samp_prob[per_sample_category]
        weight = torch.mul(1.0 / torch.bincount(per_sample_category)[per_sample_category], w)
        return torch.dot(weight, per_sample_loss)


def _official_lambda_step(probs, categories, losses_w, losses_u, alpha, lr):
    """minmax.py: λ.grad from α·L2(w, λ) and −α·L2(u, λ) on the same minibatch, then an optimizer step (SGD here)."""
    module = SampProb(torch.log(probs))
    optimizer = torch.optim.SGD(module.parameters(), lr=lr)
    (alpha * module(losses_w, categories)).backward()
    (-alpha * module(losses_u, categories)).backward()
    optimizer.step()
    return torch.softmax(module.p.detach(), dim=0), module


class OfficialLambda:
    """minmax.py's λ over a whole run: one `SampProb` parameter and one optimizer, kept across steps. The code builds
    it as ``get_optimizer(samp_prob_p.parameters(), {"name": "adamw", "lr": lr})`` (training_utils.py), i.e.
    ``torch.optim.AdamW(params, lr=lr)`` with torch's defaults; ``**settings`` overrides them for the other cases."""

    def __init__(self, logits, lr, **settings):
        self.module = SampProb(logits)
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=lr, **settings)

    def step(self, categories, losses_w, losses_u, alpha):
        (alpha * self.module(losses_w, categories)).backward()
        (-alpha * self.module(losses_u, categories)).backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return torch.softmax(self.module.p.detach(), dim=0)


def _random_gap_batch(gen, categories, num_sources):
    losses_w = torch.rand(len(categories), generator=gen, dtype=torch.float64) + 1.0
    losses_u = torch.rand(len(categories), generator=gen, dtype=torch.float64) + 1.0
    gap = [float(losses_w[categories == i].mean() - losses_u[categories == i].mean()) for i in range(num_sources)]
    return losses_w, losses_u, torch.tensor(gap + [math.nan], dtype=torch.float64)  # last: the validation domain


def test_scalebio_loss_gap_step_equals_the_official_code_over_three_steps():
    # Training sources 0, 1, 2 and the validation set as domain 3 (not in the softmax: target_share 0).
    gen = torch.Generator().manual_seed(0)
    categories = torch.tensor([0, 0, 1, 2, 2, 2])
    probs = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    weights = torch.cat([probs, torch.zeros(1, dtype=torch.float64)])
    for step in range(3):
        losses_w = torch.rand(6, generator=gen, dtype=torch.float64) + 1.0
        losses_u = torch.rand(6, generator=gen, dtype=torch.float64) + 1.0
        probs, module = _official_lambda_step(probs, categories, losses_w, losses_u, alpha=10.0, lr=0.05)
        gap = [float(losses_w[categories == i].mean() - losses_u[categories == i].mean()) for i in range(3)]
        gap = torch.tensor(gap + [math.nan], dtype=torch.float64)  # the validation domain's entry is unused
        weights = update_domain_weights("scalebio", weights, step=step, loss_gap=gap, target_domains=[3],
                                        step_size=0.05, penalty=10.0, optimizer="sgd")
        # 1e-8: the official 1.0 / bincount(...) is a float32 tensor (1/3 rounded); ours is float64.
        _close(weights[:3], probs.tolist(), tol=1e-8)
        assert weights[3] == 0.0


@pytest.mark.parametrize("start, lr, settings", [
    # The official run: λ starts at 0 (uniform), lr_lambda 1e-2, torch's AdamW defaults (weight decay 0.01 on λ).
    ("uniform", 1e-2, {}),
    # Stressed: non-uniform start with λ shifted by +3 (the decay acts on the shift too), big lr and decay, other betas.
    ("shifted", 0.5, {"betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.3}),
])
def test_scalebio_adamw_equals_the_official_lambda_optimizer_over_five_steps(start, lr, settings):
    categories = torch.tensor([0, 0, 1, 2, 2, 2])
    probs = torch.full((3,), 1 / 3, dtype=torch.float64) if start == "uniform" else \
        torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    official = OfficialLambda(torch.zeros(3, dtype=torch.float64) if start == "uniform" else torch.log(probs) + 3.0,
                              lr, **settings)
    state = DomainWeightState(torch.cat([probs, torch.zeros(1, dtype=torch.float64)]))
    hp = dict(target_domains=[3], step_size=lr, penalty=10.0,
              **{key: list(value) if key == "betas" else value for key, value in settings.items()})
    gen = torch.Generator().manual_seed(1)
    for step in range(5):
        losses_w, losses_u, gap = _random_gap_batch(gen, categories, 3)
        expected = official.step(categories, losses_w, losses_u, alpha=10.0)
        update_domain_state("scalebio", state, loss_gap=gap, **hp)
        _close(state.weights[:3], expected.tolist(), tol=1e-6)
        assert state.weights[3] == 0.0
        torch_state = official.optimizer.state[official.module.p]
        _close(state.buffers["exp_avg"][:3], torch_state["exp_avg"].tolist(), tol=1e-6)
        _close(state.buffers["exp_avg_sq"][:3], torch_state["exp_avg_sq"].tolist(), tol=1e-6)
        assert state.buffers["adamw_step"] == step + 1 and state.buffers["exp_avg"][3] == 0.0
    assert not torch.allclose(state.weights[:3].double(), probs, atol=1e-3)  # it moved: the comparison is not vacuous


def test_scalebio_adamw_state_round_trips_through_a_checkpoint_mid_run():
    # The online loop's state (what the trainer saves as domain_weights.pt): 2 updates, save, restore into a fresh
    # loop, then 2 more updates in both with the same gradients: the same weights; dropping the moments differs.
    gen = torch.Generator().manual_seed(2)
    steps = [torch.randn(4, 5, generator=gen, dtype=torch.float64) for _ in range(4)]
    names, shares = ["a", "b", "c", "val"], torch.full((4,), 0.25, dtype=torch.float64)

    def loop():
        return OnlineDomainWeights(names, shares, torch.tensor([0.4, 0.3, 0.2, 0.1]), rule="scalebio",
                                   rule_kwargs={"target_domains": [3], "step_size": 0.3, "target_share": 0.1})

    run = loop()
    for grads in steps[:2]:
        run.last_grads = grads
        run.step_end()
    assert set(run.state.buffers) == {"exp_avg", "exp_avg_sq", "adamw_step"}
    saved = io.BytesIO()
    torch.save(run.state_dict(), saved)
    saved.seek(0)
    resumed, fresh = loop(), loop()
    resumed.load_state_dict(torch.load(saved))
    fresh.load_state_dict(run.state_dict())
    fresh.state.buffers = {}  # the same weights without the moments: what a rule without kept state would do
    for grads in steps[2:]:
        for each in (run, resumed, fresh):
            each.last_grads = grads
            each.step_end()
        assert torch.equal(resumed.weights, run.weights)
    assert float(resumed.state.buffers["adamw_step"]) == 4.0
    assert not torch.allclose(fresh.weights, run.weights, atol=1e-4)


def test_scalebio_bad_optimizer_settings_fail_with_the_valid_choices():
    with pytest.raises(ValueError, match=r"`optimizer`.*one of \['adamw', 'sgd'\], got 'adam'"):
        validate_domain_update("scalebio", target_domains=[3], optimizer="adam")
    with pytest.raises(ValueError, match=r"\['betas', 'eps'\] are not settings of `optimizer: sgd`"):
        validate_domain_update("scalebio", target_domains=[3], optimizer="sgd", betas=[0.9, 0.99], eps=1e-8)
    validate_domain_update("scalebio", target_domains=[3], optimizer="sgd", weight_decay=0.1)
    for bad, match in ((dict(betas=[0.9]), "`betas`"), (dict(betas=[0.9, 1.0]), "`betas`"), (dict(eps=0.0), "`eps`"),
                       (dict(weight_decay=-0.1), "`weight_decay`"),
                       (dict(step_size=2.0, weight_decay=0.5), "step_size·weight_decay < 1")):
        with pytest.raises(ValueError, match=match):
            validate_domain_update("scalebio", target_domains=[3], **bad)
    with pytest.raises(ValueError, match="`optimizer`"):
        update_domain_weights("scalebio", torch.tensor([0.5, 0.5]), step=0, loss_gap=torch.zeros(2),
                              target_domains=[1], optimizer=["adamw"])


def test_scalebio_sgd_weight_decay_is_torchs_and_adamw_decay_is_decoupled():
    # SGD with weight decay (coupled, λ ← λ − η(g + wd·λ)) from λ = log p + 2: p' equals torch.optim.SGD's.
    categories = torch.tensor([0, 1, 1, 2])
    probs = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    module = SampProb(torch.log(probs) + 2.0)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.4, weight_decay=0.2)
    gen = torch.Generator().manual_seed(3)
    losses_w, losses_u, gap = _random_gap_batch(gen, categories, 3)
    (10.0 * module(losses_w, categories) - 10.0 * module(losses_u, categories)).backward()
    optimizer.step()
    weights = torch.cat([probs, torch.zeros(1, dtype=torch.float64)])
    new = update_domain_weights("scalebio", weights, step=0, loss_gap=gap, target_domains=[3], optimizer="sgd",
                                step_size=0.4, weight_decay=0.2)
    _close(new[:3], torch.softmax(module.p.detach(), dim=0).tolist(), tol=1e-9)
    # AdamW: a zero gap leaves only the decay, λ ← (1 − η·wd)·λ: p' ∝ p^(1 − η·wd), toward uniform.
    kept = update_domain_weights("scalebio", weights, step=0, loss_gap=torch.zeros(4), target_domains=[3],
                                 step_size=0.5, weight_decay=0.4)
    _close(kept[:3], (probs ** 0.8 / (probs ** 0.8).sum()).tolist(), tol=1e-12)


def test_scalebio_gradient_equals_the_official_codes_jacobian_formula():
    # minmax.py logs grad_p = (p_L_w_L2 + p_L_u_L2) @ (diag(s) − s sᵀ) as a check of λ.grad; ours is that product.
    probs = torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64)
    d = torch.tensor([0.4, -1.0, 2.0], dtype=torch.float64)
    s = probs.reshape(-1, 1)
    jacobian = torch.diagflat(s) - torch.mul(s, s.T)
    _close(softmax_logit_gradient(probs, d), torch.matmul(d, jacobian).tolist(), tol=1e-15)
    assert float(softmax_logit_gradient(probs, d).sum()) == pytest.approx(0.0, abs=1e-15)  # why λ = log p is exact


def test_scalebio_online_form_is_the_penalty_gap_of_one_validation_step():
    # Linear losses ℓ_i(θ) = <c_i, θ>: with w = u − g_val/α the penalty gap α(ℓ_i(w) − ℓ_i(u)) = −<c_i, g_val>
    # exactly, so the `grads` form must equal the `loss_gap` form fed with that gap.
    c = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.5, -1.0, 1.0]], dtype=torch.float64)
    alpha, u = 10.0, torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    w = u - c[1] / alpha  # domain 1 is the validation set: g_val = c_1
    gap = c @ w - c @ u
    weights = torch.tensor([0.2, 0.0, 0.5, 0.3], dtype=torch.float64)
    # SGD: AdamW's first step would hide a wrong scale of d (m̂/√v̂ ≈ sign).
    via_gap = update_domain_weights("scalebio", weights, step=0, loss_gap=gap, target_domains=[1], penalty=alpha,
                                    step_size=0.8, optimizer="sgd")
    via_grads = update_domain_weights("scalebio", weights, step=0, grads=c, target_domains=[1], step_size=0.8,
                                      optimizer="sgd")
    _close(via_grads, via_gap.tolist(), tol=1e-12)


def test_scalebio_limits_and_direction():
    grads = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]])
    weights = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    adamw = update_domain_weights("scalebio", weights, step=0, grads=grads, target_domains=[3], target_share=0.25,
                                  step_size=0.5, weight_decay=0.0)
    # First AdamW step from zero moments: m̂/√v̂ = g/|g| (ε aside), so λ_i −= η·sign(g_i); g = −p ⊙ (a − ⟨p, a⟩).
    _close(adamw[:3], (0.75 * torch.softmax(torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64), 0)).tolist(),
           tol=1e-7)
    new = update_domain_weights("scalebio", weights, step=0, grads=grads, target_domains=[3], target_share=0.25,
                                optimizer="sgd", step_size=1.0)
    assert new[0] > 0.25 > new[2] and new[3] == pytest.approx(0.25)  # aligned gains, opposed loses
    # By hand: p = 1/3, a = (1, 0, −1), ⟨p, a⟩ = 0, λ_i += η·p_i·a_i.
    logits = torch.tensor([1 / 3, 0.0, -1 / 3], dtype=torch.float64)
    _close(new[:3], (0.75 * torch.softmax(logits, dim=0)).tolist())
    kept = update_domain_weights("scalebio", weights, step=0, grads=grads, target_domains=[3], step_size=1e-12,
                                 target_share=0.25)  # AdamW: λ moves by about η
    _close(kept, weights.tolist(), tol=1e-12)
    with pytest.raises(ValueError, match="exactly one"):
        update_domain_weights("scalebio", weights, step=0, target_domains=[3])
    with pytest.raises(ValueError, match="exactly one"):
        update_domain_weights("scalebio", weights, step=0, grads=grads, loss_gap=torch.zeros(4), target_domains=[3])
    with pytest.raises(ValueError, match="penalty"):
        validate_domain_update("scalebio", target_domains=[3], penalty=0.0)


# ---------------------------------------------------------------------------------------------- online (SFT recipes)
@pytest.fixture
def gradients_seen(monkeypatch):
    """The [K, P] gradients each optimizer step hands to the rule, as the trainer computed them."""
    seen = []
    original = domain_gradients.DomainGradients.step_end

    def spy(self):
        grads = original(self)
        seen.append(grads.clone())
        return grads

    monkeypatch.setattr(domain_gradients.DomainGradients, "step_end", spy)
    return seen


def _hand_scalebio(weights, grads, target, eta):
    generic = [i for i in range(len(weights)) if i != target]
    p = torch.tensor([weights[i] for i in generic], dtype=torch.float64)
    p = p / p.sum()
    a = torch.tensor([float(grads[i].double() @ grads[target].double()) for i in generic], dtype=torch.float64)
    new = torch.softmax(torch.log(p) + eta * p * (a - (p * a).sum()), dim=0)
    out = [0.0] * len(weights)
    for i, value in zip(generic, new.tolist()):
        out[i] = value
    return out


class _HandScaleBioAdamW:
    """torch.optim.AdamW (torch defaults, as the official code) on a λ parameter kept over the run, started at log p
    of the first weights' generic part; its gradient set by hand to p ⊙ (d − ⟨p, d⟩), d_i = −⟨g_i, g_target⟩."""

    def __init__(self, lr):
        self.lr, self.logits, self.optimizer = lr, None, None

    def __call__(self, weights, grads, target):
        generic = [i for i in range(len(weights)) if i != target]
        if self.logits is None:
            p = torch.tensor([weights[i] for i in generic], dtype=torch.float64)
            self.logits = torch.nn.Parameter(torch.log(p / p.sum()))
            self.optimizer = torch.optim.AdamW([self.logits], lr=self.lr)
        p = torch.softmax(self.logits.detach(), dim=0)
        d = torch.tensor([-float(grads[i].double() @ grads[target].double()) for i in generic], dtype=torch.float64)
        self.logits.grad = p * (d - (p * d).sum())
        self.optimizer.step()
        out = [0.0] * len(weights)
        for i, value in zip(generic, torch.softmax(self.logits.detach(), dim=0).tolist()):
            out[i] = value
        return out


@pytest.mark.parametrize("rule, extra", [("dga", {"ema": 0.3, "step_size": 20.0}),
                                         ("scalebio", {"optimizer": "sgd", "step_size": 20.0}),
                                         ("scalebio", {"step_size": 0.5})])  # AdamW, the default
def test_recipe_three_online_steps_follow_the_rule_on_the_trainers_gradients(rule, extra, tiny_model_dir, tmp_path,
                                                                            gradients_seen):
    out = tmp_path / rule
    kwargs = {"target_domains": [2], **extra}
    adamw = _HandScaleBioAdamW(lr=0.5)
    trainer, _ = cli.sft_main(["--config", str(ROOT / f"recipes/tiny/{rule}.yaml"), "--model_name_or_path",
                               tiny_model_dir, "--output_dir", str(out), "--max_steps", "3", "--eval_after_training",
                               "false", "--domain_reweighting_kwargs", json.dumps(kwargs)])
    summary = json.loads((out / "domain_weights.json").read_text())
    assert summary["rule"] == rule and summary["num_updates"] == 3
    names = trainer.domain_weights.domain_names
    assert names == ["addition", "comparison", "reversal"]  # target index 2 = reversal
    history = [h.tolist() for h in trainer.domain_weights.history]
    assert len(history) == 4 and len(gradients_seen) == 3
    for before, grads, after in zip(history, gradients_seen, history[1:]):
        expected = (_dga_by_hand(before, grads.double().tolist(), [2], eta=20.0, beta=0.3, share=0.0)
                    if rule == "dga" else _hand_scalebio(before, grads, 2, eta=20.0) if "optimizer" in extra
                    else adamw(before, grads, 2))
        _close(after, expected, tol=1e-6)
        assert after[2] == 0.0  # the target is never trained on ...
    assert not torch.equal(trainer.domain_weights.history[-1], trainer.domain_weights.history[0])
    # ... but, upweighted by 0, it stays in the batches, so its gradient row is fresh every step.
    assert all(g[2].abs().sum() > 0 for g in gradients_seen)
    assert not torch.equal(gradients_seen[0][2], gradients_seen[1][2])
    ids = torch.tensor([0, 1, 2])
    assert trainer.domain_weights.example_weights(ids)[2] == 0.0


def test_missing_target_domains_fails_before_training(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="target_domains"):
        cli.sft_main(["--config", str(ROOT / "recipes/tiny/dga.yaml"), "--model_name_or_path", tiny_model_dir,
                      "--output_dir", str(tmp_path / "x"), "--domain_reweighting_kwargs", '{"step_size": 1.0}'])


def test_scalebio_adamw_resumed_sft_run_matches_the_uninterrupted_one(tiny_model_dir, tmp_path,
                                                                      crash_at_training_step):
    # The trainer saves the weight state (with the AdamW moments) in every checkpoint: a run cut at step 6 and resumed
    # from checkpoint-4 gives the weights of the uninterrupted run; restarting the moments would not.
    def argv(out, *extra):
        return ["--config", str(ROOT / "recipes/tiny/scalebio.yaml"), "--model_name_or_path", tiny_model_dir,
                "--output_dir", str(out), "--max_steps", "8", "--save_strategy", "steps", "--save_steps", "4",
                "--eval_after_training", "false", "--domain_reweighting_kwargs",
                json.dumps({"target_domains": [2], "step_size": 0.05}), *extra]

    full, _ = cli.sft_main(argv(tmp_path / "full"))
    crash, restore = crash_at_training_step
    crash(cli.DomainSFTTrainer, 6)
    with pytest.raises(RuntimeError, match="power cut"):
        cli.sft_main(argv(tmp_path / "crash"))
    restore()
    resumed, _ = cli.sft_main(argv(tmp_path / "crash", "--resume_from_checkpoint", "true"))
    assert resumed.domain_weights.num_updates == 8
    assert float(resumed.domain_weights.state.buffers["adamw_step"]) == 8.0
    torch.testing.assert_close(torch.stack(resumed.domain_weights.history), torch.stack(full.domain_weights.history),
                               rtol=0, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(resumed.domain_weights.state.buffers[key], full.domain_weights.state.buffers[key],
                                   rtol=1e-5, atol=1e-9)
    assert not torch.allclose(full.domain_weights.history[-1], full.domain_weights.history[0], atol=1e-3)
