"""Sequence-level preference losses: ipo, robust, hinge (margin_losses), discopop, madpo, npo.

Expected values are computed independently with `math` from hand-picked sequence sums, and the TRL-equivalence tests
re-derive TRL's `DPOTrainer` expressions from the raw token tensors.
"""

import math

import pytest
import torch

import alignment.losses.discopop  # noqa: F401  (registers the losses)
import alignment.losses.madpo  # noqa: F401
import alignment.losses.margin_losses  # noqa: F401
import alignment.losses.npo  # noqa: F401
from alignment.losses import PreferenceBatch, compute_preference_loss, validate_preference_loss
from alignment.losses.madpo import madpo_weight
from alignment.testing import example_preference_batch as token_batch


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def logsig(x):
    return -math.log1p(math.exp(-x))


H = [2.25, -2.0]


def seq_batch(h, **extras):
    """One-token pairs with margin h: chosen log-ratio h, rejected log-ratio 0."""
    h = torch.as_tensor(h, dtype=torch.float32)
    zeros = torch.zeros_like(h)
    return PreferenceBatch.from_sequence_logps(h - 1.0, zeros - 2.0, zeros - 1.0, zeros - 2.0, **extras)


def random_batch(seed=0, b=5, t=7):
    g = torch.Generator().manual_seed(seed)
    lengths_c = torch.randint(1, t + 1, (b,), generator=g)
    lengths_r = torch.randint(1, t + 1, (b,), generator=g)
    ar = torch.arange(t)
    cm = (ar < lengths_c[:, None]).float()
    rm = (ar < lengths_r[:, None]).float()
    def lp():
        return -torch.rand(b, t, generator=g) * 3
    return PreferenceBatch(lp() * cm, lp() * rm, lp() * cm, lp() * rm, cm, rm)


def grads(name, batch, **hp):
    batch.chosen_logps.requires_grad_(True)
    batch.rejected_logps.requires_grad_(True)
    loss, _ = compute_preference_loss(name, batch, **hp)
    loss.sum().backward()
    cg = batch.chosen_logps.grad if batch.chosen_logps.grad is not None else torch.zeros_like(batch.chosen_logps)
    rg = batch.rejected_logps.grad if batch.rejected_logps.grad is not None else torch.zeros_like(batch.rejected_logps)
    return loss.detach(), cg, rg


# ---------------------------------------------------------------- TRL equivalence (ipo, robust, hinge, discopop)

def trl_reference(loss_type, batch, beta, label_smoothing=0.0, discopop_tau=0.05):
    """TRL 1.16 DPOTrainer formulas (reverse_kl), re-derived from token tensors and completion masks."""
    import torch.nn.functional as F

    chosen_logratios = (batch.chosen_logps * batch.chosen_mask).sum(1) - (
        batch.ref_chosen_logps * batch.chosen_mask
    ).sum(1)
    rejected_logratios = (batch.rejected_logps * batch.rejected_mask).sum(1) - (
        batch.ref_rejected_logps * batch.rejected_mask
    ).sum(1)
    delta = chosen_logratios - rejected_logratios
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if loss_type == "ipo":
        c = chosen_logratios / batch.chosen_mask.sum(dim=1).clamp(min=1.0)
        r = rejected_logratios / batch.rejected_mask.sum(dim=1).clamp(min=1.0)
        return (c - r - 1 / (2 * beta)) ** 2
    if loss_type == "robust":
        clean = -(1 - label_smoothing) * F.logsigmoid(beta * delta)
        flipped = -label_smoothing * F.logsigmoid(-beta * delta)
        return (clean - flipped) / (1 - 2 * label_smoothing)
    if loss_type == "discopop":
        logits = delta * beta
        mod = torch.sigmoid(logits / discopop_tau)
        return -F.logsigmoid(logits) * (1 - mod) + torch.exp(-logits) * mod
    raise AssertionError(loss_type)


@pytest.mark.parametrize(
    "name,hp",
    [
        ("ipo", {"beta": 0.1}),
        ("ipo", {"beta": 0.7}),
        ("robust", {"beta": 0.1, "label_smoothing": 0.0}),
        ("robust", {"beta": 0.3, "label_smoothing": 0.2}),
        ("hinge", {"beta": 0.1}),
        ("hinge", {"beta": 2.0}),
        ("discopop", {"beta": 0.05, "discopop_tau": 0.05}),
        ("discopop", {"beta": 0.5, "discopop_tau": 0.2}),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_trl_formula(name, hp, seed):
    batch = random_batch(seed)
    loss, _ = compute_preference_loss(name, batch, **hp)
    torch.testing.assert_close(loss, trl_reference(name, batch, **hp))


# ---------------------------------------------------------------- IPO

def test_ipo_hand_computed_length_normalised():
    # normalised margins: pair 0: 1.25/2 − (−1.0)/1 = 1.625; pair 1: −1.0/3 − 1.0/2 = −5/6
    loss, metrics = compute_preference_loss("ipo", token_batch(), beta=0.25)  # target 1/(2β) = 2
    expected = torch.tensor([(1.625 - 2.0) ** 2, (-5 / 6 - 2.0) ** 2])
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(metrics["ipo/normalized_margin"], torch.tensor([1.625, -5 / 6]))


def test_ipo_zero_at_target_and_default_beta():
    beta = 0.1
    loss, _ = compute_preference_loss("ipo", seq_batch([1 / (2 * beta)]))  # one-token completions: h_norm = h
    torch.testing.assert_close(loss, torch.zeros(1))
    # the default is TRL's β = 0.1
    b = token_batch()
    torch.testing.assert_close(compute_preference_loss("ipo", b)[0], compute_preference_loss("ipo", b, beta=0.1)[0])


def test_ipo_gradient_signs_and_overshoot():
    # below the target: chosen pushed up, rejected down; per-token gradient scaled by 1/|y|
    loss, cg, rg = grads("ipo", token_batch(), beta=0.1)
    cm, rm = token_batch().chosen_mask.bool(), token_batch().rejected_mask.bool()
    assert (cg[cm] < 0).all() and (rg[rm] > 0).all()
    # dL/dlogp_t (chosen, pair 0) = 2 (h_norm − 5) / |y_w| = 2(1.625 − 5)/2
    torch.testing.assert_close(cg[0, :2], torch.full((2,), 2 * (1.625 - 5.0) / 2))
    # above the target (h_norm = 10 > 5) IPO pushes back: chosen down
    _, cg2, rg2 = grads("ipo", seq_batch([10.0]), beta=0.1)
    assert cg2[0, 0] > 0 and rg2[0, 0] < 0


# ---------------------------------------------------------------- robust

def test_robust_eps_zero_equals_sigmoid():
    for batch_fn in (token_batch, lambda: random_batch(3)):
        b = batch_fn()
        torch.testing.assert_close(
            compute_preference_loss("robust", b, beta=0.3)[0], compute_preference_loss("sigmoid", b, beta=0.3)[0]
        )


def test_robust_hand_computed():
    beta, eps = 0.1, 0.2
    loss, _ = compute_preference_loss("robust", token_batch(), beta=beta, label_smoothing=eps)
    expected = [(-(1 - eps) * logsig(beta * h) + eps * logsig(-beta * h)) / (1 - 2 * eps) for h in H]
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_robust_gradient_signs():
    _, cg, rg = grads("robust", token_batch(), beta=0.5, label_smoothing=0.3)
    b = token_batch()
    assert (cg[b.chosen_mask.bool()] < 0).all() and (rg[b.rejected_mask.bool()] > 0).all()
    # dL/dh = −β[(1−ε)σ(−βh) + εσ(βh)]/(1−2ε)
    expected = [-0.5 * ((0.7) * sig(-0.5 * h) + 0.3 * sig(0.5 * h)) / 0.4 for h in H]
    torch.testing.assert_close(cg[:, 0], torch.tensor(expected))


@pytest.mark.parametrize("eps", [-0.1, 0.5, 0.7])
def test_robust_label_smoothing_out_of_range(eps):
    with pytest.raises(ValueError, match=r"label_smoothing.*\[0.0, 0.5\)"):
        validate_preference_loss("robust", label_smoothing=eps)


# ---------------------------------------------------------------- hinge

def test_hinge_hand_computed_and_saturation():
    loss, _ = compute_preference_loss("hinge", token_batch(), beta=0.2)
    torch.testing.assert_close(loss, torch.tensor([1 - 0.2 * 2.25, 1 + 0.2 * 2.0]))
    # βh ≥ 1: zero loss and zero gradient
    loss, cg, rg = grads("hinge", seq_batch([10.0, 11.0]), beta=0.1)  # βh = 1.0 and 1.1
    torch.testing.assert_close(loss, torch.zeros(2))
    assert (cg == 0).all() and (rg == 0).all()


def test_hinge_gradient_signs_when_active():
    _, cg, rg = grads("hinge", token_batch(), beta=0.2)
    b = token_batch()
    # active on both pairs: dL/dh = −β
    torch.testing.assert_close(cg[b.chosen_mask.bool()], torch.full((5,), -0.2))
    torch.testing.assert_close(rg[b.rejected_mask.bool()], torch.full((3,), 0.2))


# ---------------------------------------------------------------- DiscoPOP

def discopop_math(h, beta, tau):
    x = beta * h
    q = sig(x / tau)
    return (1 - q) * -logsig(x) + q * math.exp(-x), q


def test_discopop_hand_computed():
    loss, metrics = compute_preference_loss("discopop", token_batch(), beta=0.05, discopop_tau=0.05)
    # β = τ ⇒ q = σ(h)
    vals = [discopop_math(h, 0.05, 0.05) for h in H]
    torch.testing.assert_close(loss, torch.tensor([v[0] for v in vals]))
    torch.testing.assert_close(metrics["discopop/mix_weight"], torch.tensor([sig(2.25), sig(-2.0)]))
    # β ≠ τ: q = σ(βh/τ), not the model card's σ(h)
    _, metrics = compute_preference_loss("discopop", token_batch(), beta=0.1, discopop_tau=0.05)
    torch.testing.assert_close(metrics["discopop/mix_weight"], torch.tensor([sig(4.5), sig(-4.0)]))


def test_discopop_limits():
    # h = 0: q = 1/2, L = (log 2 + 1)/2
    loss, _ = compute_preference_loss("discopop", seq_batch([0.0]))
    torch.testing.assert_close(loss, torch.tensor([(math.log(2) + 1) / 2]))
    # τ → ∞: q → 1/2 for any h
    loss, metrics = compute_preference_loss("discopop", token_batch(), beta=0.3, discopop_tau=1e8)
    torch.testing.assert_close(metrics["discopop/mix_weight"], torch.full((2,), 0.5))
    expected = [0.5 * -logsig(0.3 * h) + 0.5 * math.exp(-0.3 * h) for h in H]
    torch.testing.assert_close(loss, torch.tensor(expected))
    # τ → 0: q is a step; large positive margin → pure exponential, large negative → pure logistic
    loss, _ = compute_preference_loss("discopop", seq_batch([3.0, -3.0]), beta=1.0, discopop_tau=1e-4)
    torch.testing.assert_close(loss, torch.tensor([math.exp(-3.0), -logsig(-3.0)]))


def test_discopop_finite_for_extreme_negative_margin():
    loss, cg, rg = grads("discopop", seq_batch([-3000.0]), beta=0.05, discopop_tau=0.05)  # βh = −150
    assert torch.isfinite(loss).all() and torch.isfinite(cg).all() and torch.isfinite(rg).all()
    torch.testing.assert_close(loss, torch.tensor([150.0]))


def discopop_dldx_math(x, tau):
    """dL/dx for x = βh: −(1−q)σ(−x) − q e^{−x} + q(1−q)/τ · (e^{−x} + log σ(x))."""
    q = sig(x / tau)
    return -(1 - q) * sig(-x) - q * math.exp(-x) + q * (1 - q) / tau * (math.exp(-x) + logsig(x))


@pytest.mark.parametrize("beta,tau", [(0.05, 0.05), (0.3, 0.5)])
def test_discopop_gradient_matches_analytic_derivative(beta, tau):
    _, cg, rg = grads("discopop", token_batch(), beta=beta, discopop_tau=tau)
    expected = torch.tensor([beta * discopop_dldx_math(beta * h, tau) for h in H])
    torch.testing.assert_close(cg[:, 0], expected)
    torch.testing.assert_close(rg[:, 0], -expected)


def test_discopop_gradient_signs_outside_the_non_monotone_band():
    # Clear of |βh| ≲ 0.13 (at τ = 0.05) the loss decreases in h: chosen pushed up, rejected down.
    _, cg, rg = grads("discopop", seq_batch([6.0, -6.0, 20.0]), beta=0.05, discopop_tau=0.05)
    assert (cg[:, 0] < 0).all() and (rg[:, 0] > 0).all()


def test_discopop_is_non_monotone_near_zero_margin():
    """A property of the formula itself (TRL's and the paper's): at h = 0 with τ = 0.05 the q-modulation term
    dominates and dL/dh > 0, i.e. a gradient step *lowers* the margin. Pinned so that a 'fix' is a conscious change."""
    _, cg, _ = grads("discopop", seq_batch([0.0]), beta=0.05, discopop_tau=0.05)
    # dL/dx at 0 = −1/4 − 1/2 + (1/(4τ))(1 − log 2)
    expected = 0.05 * (-0.75 + (1 - math.log(2)) / (4 * 0.05))
    assert expected > 0
    torch.testing.assert_close(cg[0, 0], torch.tensor(expected))


# ---------------------------------------------------------------- MADPO

def madpo_w_math(m, c_max=2.0, c_min=0.5, lam=1.0, tau=2.0):
    k = (c_max - 1) / (1 - c_min)
    c = c_min + (c_max - c_min) / (1 + k * math.exp(lam * (abs(m) - tau)))
    return (sig(c * m) / sig(m) if m > -tau else 1.0), c


def test_madpo_weight_regimes():
    tau = 2.0
    m = torch.tensor([tau, 0.5, 1.0, 1.9, 2.5, 5.0, 20.0, -0.5, -1.9, -tau, -2.5, -50.0, 0.0])
    coef, w = madpo_weight(m)
    torch.testing.assert_close(coef[0], torch.tensor(1.0))  # c(τ) = 1
    torch.testing.assert_close(w[0], torch.tensor(1.0))  # w(τ) = 1
    assert (w[1:4] > 1).all(), "0 < m < τ: up-weighted"
    assert (w[4:7] < 1).all(), "m > τ: down-weighted"
    assert (w[7:9] < 1).all(), "−τ < m < 0: down-weighted"
    assert (w[9:12] == 1).all(), "m ≤ −τ: weight exactly 1"
    torch.testing.assert_close(w[12], torch.tensor(1.0))
    assert torch.isfinite(w).all()
    # c → c_min for |m| ≫ τ; c(0) > 1
    torch.testing.assert_close(coef[6], torch.tensor(0.5), atol=1e-6, rtol=0)
    assert coef[12] > 1


def test_madpo_hand_computed():
    # m = 1, defaults: K = 2, c = 0.5 + 1.5/(1 + 2/e)
    c = 0.5 + 1.5 / (1 + 2 / math.e)
    w = sig(c) / sig(1.0)
    assert w == pytest.approx(madpo_w_math(1.0)[0])
    margin = torch.tensor([1.0, -3.0])
    loss, metrics = compute_preference_loss("madpo", token_batch(margin=margin), beta=0.1)
    expected = [w * -logsig(0.1 * 2.25), 1.0 * -logsig(0.1 * -2.0)]
    torch.testing.assert_close(loss, torch.tensor(expected))
    torch.testing.assert_close(metrics["madpo/weight"], torch.tensor([w, 1.0]))
    torch.testing.assert_close(metrics["madpo/coef"][0], torch.tensor(c))
    assert not metrics["madpo/weight"].requires_grad


def test_madpo_non_default_constants_hand_computed():
    hp = dict(c_max=4.0, c_min=0.25, lam=0.5, tau=6.91)
    margins = [0.3, 3.0, 8.0, -4.0, -7.0]
    _, metrics = compute_preference_loss("madpo", seq_batch([1.0] * 5, margin=torch.tensor(margins)), **hp)
    torch.testing.assert_close(metrics["madpo/weight"], torch.tensor([madpo_w_math(m, **hp)[0] for m in margins]))


def test_madpo_gradient_is_weight_times_dpo_gradient():
    margin = torch.tensor([1.0, -0.5])
    b = token_batch(margin=margin.clone().requires_grad_(True))
    _, cg, rg = grads("madpo", b, beta=0.5)
    w = torch.tensor([madpo_w_math(1.0)[0], madpo_w_math(-0.5)[0]])
    h = torch.tensor(H)
    dpo_grad = -0.5 * torch.sigmoid(-0.5 * h)  # dL_DPO/dℓ_w
    torch.testing.assert_close(cg[:, 0], w * dpo_grad)
    torch.testing.assert_close(rg[:, 0], -w * dpo_grad)
    assert (cg[b.chosen_mask.bool()] < 0).all() and (rg[b.rejected_mask.bool()] > 0).all()
    assert b.margin.grad is None  # the weight is detached: nothing flows into the margin column


def test_madpo_composes_with_batch_weight():
    margin = torch.tensor([1.0, 3.0])
    plain, _ = compute_preference_loss("madpo", token_batch(margin=margin))
    weighted, _ = compute_preference_loss("madpo", token_batch(margin=margin, weight=torch.tensor([2.0, 0.5])))
    torch.testing.assert_close(weighted, plain * torch.tensor([2.0, 0.5]))


def test_madpo_requires_margin_column():
    with pytest.raises(ValueError, match=r"loss_type 'madpo' needs the per-example column\(s\) \['margin'\]"):
        compute_preference_loss("madpo", token_batch())


@pytest.mark.parametrize(
    "hp,match",
    [
        ({"c_max": 1.0}, r"`c_max` must be > 1"),
        ({"c_max": 0.5}, r"`c_max` must be > 1"),
        ({"c_min": 0.0}, r"`c_min` must be in \(0, 1\)"),
        ({"c_min": 1.0}, r"`c_min` must be in \(0, 1\)"),
        ({"tau": 0.0}, r"`tau` must be a number > 0"),
        ({"lam": -1.0}, r"`lam` must be a number > 0"),
        ({"beta": 0.0}, r"`beta` must be a number > 0"),
    ],
)
def test_madpo_bad_constants(hp, match):
    with pytest.raises(ValueError, match=match):
        validate_preference_loss("madpo", **hp)


# ---------------------------------------------------------------- NPO

def test_npo_hand_computed_uses_rejected_side_only():
    # rejected (forget) log-ratios [-1.0, 1.0]
    beta = 0.1
    loss, metrics = compute_preference_loss("npo", token_batch(), beta=beta)
    expected = [(2 / beta) * math.log1p(math.exp(beta * r)) for r in (-1.0, 1.0)]
    torch.testing.assert_close(loss, torch.tensor(expected))
    torch.testing.assert_close(metrics["npo/forget_logratio"], torch.tensor([-1.0, 1.0]))
    # changing the chosen side changes nothing
    other = token_batch()
    other.chosen_logps.mul_(5.0)
    torch.testing.assert_close(compute_preference_loss("npo", other, beta=beta)[0], loss)


def test_npo_gradient_lowers_forget_and_ignores_chosen():
    beta = 0.5
    _, cg, rg = grads("npo", token_batch(), beta=beta)
    b = token_batch()
    assert (cg == 0).all(), "chosen side is not part of NPO"
    assert (rg[b.rejected_mask.bool()] > 0).all(), "descending the loss must lower the forget log-prob"
    # dL/dℓ_θ(y_f) = 2σ(β r)
    expected = torch.tensor([2 * sig(beta * -1.0), 2 * sig(beta * 1.0)])
    torch.testing.assert_close(rg[:, 0], expected)


def test_npo_small_beta_recovers_gradient_ascent():
    for r in (0.0, -3.0, 2.0):
        b = PreferenceBatch.from_sequence_logps(
            torch.tensor([0.0]), torch.tensor([r - 1.0]), torch.tensor([0.0]), torch.tensor([-1.0])
        )
        _, _, rg = grads("npo", b, beta=1e-4)
        torch.testing.assert_close(rg[0, 0], torch.tensor(1.0), atol=1e-3, rtol=0)
    # at ℓ_θ = ℓ_ref the derivative is exactly 1 for any β
    one = torch.tensor([-1.0])
    b = PreferenceBatch.from_sequence_logps(one + 1, one, one + 1, one)
    _, _, rg = grads("npo", b, beta=0.3)
    torch.testing.assert_close(rg[0, 0], torch.tensor(1.0))
    # and L − (2/β) log 2 → ℓ_θ − ℓ_ref
    b = PreferenceBatch.from_sequence_logps(
        torch.tensor([0.0], dtype=torch.float64), torch.tensor([-3.5], dtype=torch.float64),
        torch.tensor([0.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64),
    )
    beta = 1e-4
    loss, _ = compute_preference_loss("npo", b, beta=beta)
    assert loss.item() - (2 / beta) * math.log(2) == pytest.approx(-2.5, abs=1e-3)


# ---------------------------------------------------------------- shared validation

@pytest.mark.parametrize("name", ["ipo", "robust", "hinge", "discopop", "madpo", "npo"])
@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_nonpositive_beta_rejected(name, beta):
    with pytest.raises(ValueError, match=r"`beta` must be a number > 0"):
        validate_preference_loss(name, beta=beta)


def test_discopop_tau_must_be_positive():
    with pytest.raises(ValueError, match=r"`discopop_tau` must be a number > 0"):
        validate_preference_loss("discopop", discopop_tau=0.0)


@pytest.mark.parametrize(
    "name,defaults",
    [
        ("ipo", {"beta": 0.1}),
        ("robust", {"beta": 0.1, "label_smoothing": 0.0}),
        ("hinge", {"beta": 0.1}),
        ("discopop", {"beta": 0.05, "discopop_tau": 0.05}),
        ("madpo", {"beta": 0.1, "c_max": 2.0, "c_min": 0.5, "lam": 1.0, "tau": 2.0}),
        ("npo", {"beta": 0.1}),
    ],
)
def test_registered_hparams_and_defaults(name, defaults):
    from alignment.losses import get_preference_loss

    spec = get_preference_loss(name)
    assert spec.hparams == defaults
    assert spec.summary  # a one-line docstring summary exists
    validate_preference_loss(name)


@pytest.mark.parametrize("name", ["ipo", "robust", "hinge", "discopop", "npo"])
def test_unit_weight_is_identity_and_weights_scale(name):
    plain, _ = compute_preference_loss(name, token_batch())
    weighted, _ = compute_preference_loss(name, token_batch(weight=torch.tensor([2.0, 0.5])))
    torch.testing.assert_close(weighted, plain * torch.tensor([2.0, 0.5]))
