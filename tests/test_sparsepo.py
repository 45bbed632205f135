"""SparsePO (arXiv 2410.05102): the loss, its limits, the two mask variants, the exact token KL, the trainer wiring."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.configs import PreferenceConfig
from alignment.losses import PreferenceBatch, compute_preference_loss, validate_preference_loss
from alignment.masks import LearnedTokenMask, SparseMaskHeads, mapo_mask, zn_rescale
from alignment.testing import perturb_parameters_, preference_pairs, trainer_test_args
from alignment.token_kl import token_kl
from alignment.trainers import PreferenceTrainer
from alignment.trainers.sparsepo import MASK_HEADS_NAME, ReferenceTokenOutputs

# ----------------------------------------------------------------------------- a hand-built batch
# Two pairs, three positions; values at padding positions are garbage on purpose (they must not count).
CHOSEN_MASK = [[1, 1, 0], [1, 1, 1]]
REJECTED_MASK = [[1, 0, 0], [1, 1, 0]]
CHOSEN_LOGPS = [[-0.5, -0.25, 0.0], [-1.0, -1.0, -1.0]]
REF_CHOSEN_LOGPS = [[-1.0, -1.0, 0.0], [-1.0, -0.5, -0.5]]  # δ_w = [[.5, .75, -], [0, -.5, -.5]]
REJECTED_LOGPS = [[-2.0, 0.0, 0.0], [-0.5, -0.5, 0.0]]
REF_REJECTED_LOGPS = [[-1.0, 0.0, 0.0], [-1.0, -1.0, 0.0]]  # δ_l = [[-1, -, -], [.5, .5, -]]
CHOSEN_KL = [[0.25, 0.5, 9.0], [0.125, 0.25, 0.5]]
REJECTED_KL = [[1.0, 7.0, 0.0], [0.5, 0.25, 3.0]]
CHOSEN_MU = [[1.0, 0.5, 5.0], [0.0, 2.0, 1.0]]
REJECTED_MU = [[0.5, 9.0, 9.0], [1.0, 0.0, 4.0]]
CHOSEN_MD = [[0.5, 1.0, 7.0], [1.0, 1.0, 0.0]]
REJECTED_MD = [[2.0, 3.0, 3.0], [0.0, 1.0, 5.0]]


def t(values):
    return torch.tensor(values, dtype=torch.float32)


def sparse_batch(chosen_mu=CHOSEN_MU, rejected_mu=REJECTED_MU, chosen_md=CHOSEN_MD, rejected_md=REJECTED_MD,
                 **overrides):
    chosen_mask, rejected_mask = t(CHOSEN_MASK), t(REJECTED_MASK)
    fields = dict(
        chosen_logps=t(CHOSEN_LOGPS) * chosen_mask, rejected_logps=t(REJECTED_LOGPS) * rejected_mask,
        ref_chosen_logps=t(REF_CHOSEN_LOGPS) * chosen_mask, ref_rejected_logps=t(REF_REJECTED_LOGPS) * rejected_mask,
        chosen_mask=chosen_mask, rejected_mask=rejected_mask,
        chosen_token_kl=t(CHOSEN_KL), rejected_token_kl=t(REJECTED_KL),
        chosen_reward_mask=t(chosen_mu), rejected_reward_mask=t(rejected_mu),
        chosen_kl_mask=t(chosen_md), rejected_kl_mask=t(rejected_md),
    )
    fields.update(overrides)
    return PreferenceBatch(**fields)


def nll_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-x))


# ----------------------------------------------------------------------------- loss values
def test_loss_matches_hand_computation():
    # u0 = (1·.5 + .5·.75) − (.5·(−1)) = 1.375;   u1 = (0·0 + 2·(−.5) + 1·(−.5)) − (1·.5 + 0·.5) = −2
    # d0 = 2·1 − (.5·.25 + 1·.5) = 1.375;          d1 = (0·.5 + 1·.25) − (1·.125 + 1·.25 + 0·.5) = −.125
    beta = 0.5
    expected = [nll_sigmoid(beta * (1.375 - 1.375)), nll_sigmoid(beta * (-2.0 + 0.125))]
    losses, metrics = compute_preference_loss("sparsepo", sparse_batch(), beta=beta, independent_masks=True)
    torch.testing.assert_close(losses, t(expected))
    torch.testing.assert_close(metrics["sparsepo/u"], t([1.375, -2.0]))
    torch.testing.assert_close(metrics["sparsepo/d"], t([1.375, -0.125]))
    # unmasked sequence KL over completion tokens: chosen .75, .875; rejected 1, .75
    torch.testing.assert_close(metrics["sparsepo/kl_chosen"], t([0.75, 0.875]))
    torch.testing.assert_close(metrics["sparsepo/kl_rejected"], t([1.0, 0.75]))


def test_l1_terms_and_halving_for_a_common_mask():
    # L1 over completion tokens: ‖m^u_w‖ = [1.5, 3], ‖m^u_l‖ = [.5, 1], ‖m^d_w‖ = [1.5, 2], ‖m^d_l‖ = [2, 1]
    # λ_u = .1, λ_d = .2: independent adds [.1·2 + .2·3.5, .1·4 + .2·3] = [.9, 1.0]; a common mask half of it.
    plain, _ = compute_preference_loss("sparsepo", sparse_batch(), beta=0.5, independent_masks=True)
    indp, _ = compute_preference_loss("sparsepo", sparse_batch(), beta=0.5, lambda_u=0.1, lambda_d=0.2,
                                      independent_masks=True)
    common, _ = compute_preference_loss("sparsepo", sparse_batch(), beta=0.5, lambda_u=0.1, lambda_d=0.2)
    torch.testing.assert_close(indp - plain, t([0.9, 1.0]))
    torch.testing.assert_close(common - plain, t([0.45, 0.5]))


def test_mask_metrics_count_exact_zeros_over_completion_tokens():
    _, metrics = compute_preference_loss("sparsepo", sparse_batch(), beta=0.5)
    # chosen m^u on completion tokens: [1, .5] and [0, 2, 1] -> zeros 0/2 and 1/3, means .75 and 1
    torch.testing.assert_close(metrics["sparsepo/reward_mask_sparsity_chosen"], t([0.0, 1 / 3]))
    torch.testing.assert_close(metrics["sparsepo/reward_mask_mean_chosen"], t([0.75, 1.0]))
    # rejected m^d: [2] and [0, 1] -> 0 and 1/2 zeros, means 2 and .5
    torch.testing.assert_close(metrics["sparsepo/kl_mask_sparsity_rejected"], t([0.0, 0.5]))
    torch.testing.assert_close(metrics["sparsepo/kl_mask_mean_rejected"], t([2.0, 0.5]))


def test_all_ones_masks_give_tdpo_v1():
    """TDPO-v1 (arXiv 2404.11999): −log σ(β[(ℓ_w − ℓ_ref,w) − (ℓ_l − ℓ_ref,l) − (SeqKL_l − SeqKL_w)])."""
    beta = 0.3
    ones = [[1.0] * 3] * 2

    def masked_sum(values, mask):
        return [sum(v * m for v, m in zip(row, mrow)) for row, mrow in zip(values, mask)]

    lw = [a - b for a, b in zip(masked_sum(CHOSEN_LOGPS, CHOSEN_MASK), masked_sum(REF_CHOSEN_LOGPS, CHOSEN_MASK))]
    ll = [a - b for a, b in zip(masked_sum(REJECTED_LOGPS, REJECTED_MASK),
                                masked_sum(REF_REJECTED_LOGPS, REJECTED_MASK))]
    kw, kl = masked_sum(CHOSEN_KL, CHOSEN_MASK), masked_sum(REJECTED_KL, REJECTED_MASK)
    expected = [nll_sigmoid(beta * ((lw[i] - ll[i]) - (kl[i] - kw[i]))) for i in range(2)]
    losses, _ = compute_preference_loss("sparsepo", sparse_batch(ones, ones, ones, ones), beta=beta)
    torch.testing.assert_close(losses, t(expected))


def test_reward_mask_one_and_no_kl_term_is_dpo_exactly():
    ones, zeros = [[1.0] * 3] * 2, [[0.0] * 3] * 2
    batch = sparse_batch(ones, ones, zeros, zeros)
    dpo, _ = compute_preference_loss("sigmoid", batch, beta=0.2)
    sparse, _ = compute_preference_loss("sparsepo", batch, beta=0.2, lambda_u=0.0, lambda_d=0.0)
    torch.testing.assert_close(sparse, dpo, rtol=0, atol=0)


def test_gradient_signs_and_masked_tokens_get_none():
    chosen_logps = (t(CHOSEN_LOGPS) * t(CHOSEN_MASK)).requires_grad_()
    chosen_kl, rejected_kl = t(CHOSEN_KL).requires_grad_(), t(REJECTED_KL).requires_grad_()
    batch = sparse_batch(chosen_logps=chosen_logps, chosen_token_kl=chosen_kl, rejected_token_kl=rejected_kl)
    losses, _ = compute_preference_loss("sparsepo", batch, beta=0.5)
    losses.sum().backward()
    grad = chosen_logps.grad
    # raising a chosen log-prob lowers the loss where m^u > 0; m^u = 0 (pair 1, token 0) and padding get exactly 0
    assert (grad[0, :2] < 0).all() and (grad[1, 1:] < 0).all()
    assert grad[1, 0] == 0 and grad[0, 2] == 0
    # d = Σ m^d KL_l − Σ m^d KL_w enters as −d: the rejected KL is penalised, the chosen one is not
    assert (rejected_kl.grad[0, 0] > 0) and (chosen_kl.grad[0, :2] < 0).all()
    assert rejected_kl.grad[1, 0] == 0 and chosen_kl.grad[1, 2] == 0  # m^d = 0


def test_token_weights_compose():
    plain, _ = compute_preference_loss("sparsepo", sparse_batch(), beta=0.5)
    ones = torch.ones(2, 3)
    same, _ = compute_preference_loss("sparsepo", sparse_batch(chosen_token_weight=ones, rejected_token_weight=ones),
                                      beta=0.5)
    torch.testing.assert_close(same, plain, rtol=0, atol=0)


def test_bad_hyper_parameters_and_missing_fields_fail_clearly():
    with pytest.raises(ValueError, match="lambda_u"):
        validate_preference_loss("sparsepo", lambda_u=-0.1)
    with pytest.raises(ValueError, match="beta"):
        validate_preference_loss("sparsepo", beta=0.0)
    with pytest.raises(ValueError, match="independent_masks"):
        validate_preference_loss("sparsepo", independent_masks="yes")
    no_kl = sparse_batch(chosen_token_kl=None, rejected_token_kl=None)
    with pytest.raises(ValueError, match="token_kl"):
        compute_preference_loss("sparsepo", no_kl)
    with pytest.raises(ValueError, match="chosen_kl_mask"):
        sparse_batch(chosen_md=[[1.0, 1.0]] * 2)


# ----------------------------------------------------------------------------- masks
def test_zn_rescale_hand_values():
    values = t([[1.0, 2.0, 4.0, 100.0], [3.0, -1.0, 0.0, 5.0], [7.0, 7.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    mask = t([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    # z-normalising is a positive affine map, so after the min-max step: (v − min)/(max − min) on the masked tokens.
    # row 0: (v − 1)/3 -> 0, 1/3, 1 (the 100 is padding); row 1: (v + 1)/6 -> 2/3, 0, 1/6, 1;
    # row 2 is constant and row 3 has one token: no ranking, all ones on the response.
    expected = t([[0.0, 1 / 3, 1.0, 0.0], [2 / 3, 0.0, 1 / 6, 1.0], [1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(zn_rescale(values, mask), expected)


def test_mapo_mask_averages_hooks_then_kinds_and_is_detached():
    mask = t([[1, 1, 1]])
    resid = [t([[1.0, 2.0, 4.0]]).requires_grad_(), t([[4.0, 2.0, 1.0]])]  # -> [0, 1/3, 1] and [1, 1/3, 0]
    logits = [t([[0.0, 1.0, 0.0]])]  # -> [0, 1, 0]
    out = mapo_mask({"resid": resid, "logits": logits}, mask)
    # resid mean [.5, 1/3, .5]; then the mean of the two kinds
    torch.testing.assert_close(out, t([[0.25, 2 / 3, 0.25]]))
    assert not out.requires_grad


def test_learned_mask_head_hand_forward_shape_and_relu_zeros():
    torch.manual_seed(0)
    head = LearnedTokenMask(hidden_size=4, num_layers=2, dropout=0.0, eps=1e-5).eval()
    hidden = [torch.randn(3, 5, 4), torch.randn(3, 5, 4)]
    out = head(hidden)
    assert out.shape == (3, 5)
    # by hand: shared LayerNorm (default affine: identity), per-layer w·x + b, ReLU, mixer without bias, ReLU
    def layer_norm(x):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    z = [torch.clamp(layer_norm(h) @ lin.weight[0] + lin.bias[0], min=0) for h, lin in zip(hidden, head.per_layer)]
    mixed = z[0] * head.mixer.weight[0, 0] + z[1] * head.mixer.weight[0, 1]
    torch.testing.assert_close(out, mixed.clamp(min=0))
    with torch.no_grad():
        head.mixer.weight.copy_(t([[1.0, -1.0]]))
        head.per_layer[1].bias.fill_(100.0)  # layer 2 dominates with a negative mixer weight: every token is 0
    assert torch.equal(head(hidden), torch.zeros(3, 5))


def test_mask_heads_common_and_independent():
    hidden = [torch.randn(2, 3, 4) for _ in range(2)]
    common = SparseMaskHeads(4, 2, dropout=0.0)
    reward, kl = common(hidden)
    assert kl is reward and not common.independent
    independent = SparseMaskHeads(4, 2, independent=True, dropout=0.0)
    reward, kl = independent(hidden)
    assert kl is not reward and reward.shape == kl.shape == (2, 3) and (reward >= 0).all() and (kl >= 0).all()
    assert len(list(independent.parameters())) == 2 * len(list(common.parameters()))


# ----------------------------------------------------------------------------- exact token KL
def test_token_kl_matches_full_softmax_in_value_and_gradient():
    torch.manual_seed(0)
    n, h, v = 7, 5, 11
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, dtype=torch.float64, requires_grad=True)
    ref_hidden, ref_weight = torch.randn(n, h, dtype=torch.float64), torch.randn(v, h, dtype=torch.float64)
    upstream = torch.randn(n, dtype=torch.float64)

    ref_logp = (ref_hidden @ ref_weight.t()).log_softmax(-1)
    naive = (ref_logp.exp() * (ref_logp - (hidden @ weight.t() + bias).log_softmax(-1))).sum(-1)
    expected_grads = torch.autograd.grad((naive * upstream).sum(), (hidden, weight, bias))

    chunked = token_kl(hidden, weight, bias, ref_hidden, ref_weight, chunk_size=3)  # 3 chunks, the last partial
    torch.testing.assert_close(chunked, naive.float())
    grads = torch.autograd.grad((chunked * upstream.float()).sum(), (hidden, weight, bias))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (chunked >= -1e-6).all()  # a KL


# ----------------------------------------------------------------------------- trainer wiring
@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_reference_outputs_align_kl_and_masks_with_the_completion_tokens(tiny):
    """KL and learned masks from the captured forwards equal a naive full-logits computation at the same positions."""
    reference, _ = tiny
    policy = copy.deepcopy(reference)
    perturb_parameters_(policy, scale=0.2)
    sparse = ReferenceTokenOutputs(reference.config, needs_kl=True, mask="learned", independent=True, dropout=0.0)
    ids = torch.randint(0, reference.config.vocab_size, (4, 9), generator=torch.Generator().manual_seed(0))
    token_mask = torch.zeros(4, 8)
    token_mask[:, 3:] = 1
    token_mask[1, 6:] = 0  # a shorter completion

    with sparse.capture_policy(policy.base_model):
        policy_logits = policy(input_ids=ids).logits
    with torch.no_grad(), sparse.capture_reference(reference.base_model):
        ref_out = reference(input_ids=ids, output_hidden_states=True)
    fields = sparse.batch_fields(token_mask, policy, reference, training=False)

    ref_logp = ref_out.logits[:, :-1].log_softmax(-1)
    naive_kl = (ref_logp.exp() * (ref_logp - policy_logits[:, :-1].log_softmax(-1))).sum(-1) * token_mask
    kl = torch.cat([fields["chosen_token_kl"], fields["rejected_token_kl"]])
    torch.testing.assert_close(kl, naive_kl, rtol=1e-4, atol=1e-6)
    assert kl.requires_grad  # gradient flows to the policy
    reward, kl_mask = sparse.mask_heads([hidden[:, :-1] for hidden in ref_out.hidden_states[1:]])
    torch.testing.assert_close(torch.cat([fields["chosen_reward_mask"], fields["rejected_reward_mask"]]),
                               reward * token_mask)
    torch.testing.assert_close(torch.cat([fields["chosen_kl_mask"], fields["rejected_kl_mask"]]),
                               kl_mask * token_mask)


def sparse_trainer(model, tokenizer, tmp_path, **overrides):
    settings = dict(per_device_train_batch_size=2, max_steps=3, max_length=64, loss_type=["sparsepo"])
    args = trainer_test_args(tmp_path, **{**settings, **overrides})
    return PreferenceTrainer(model=copy.deepcopy(model), args=PreferenceConfig(**args),
                             train_dataset=preference_pairs(6), processing_class=tokenizer)


@pytest.mark.parametrize("variant", [
    {"sparsepo_mask": "learned"},
    {"sparsepo_mask": "learned", "loss_kwargs": {"independent_masks": True, "lambda_u": 0.01, "lambda_d": 0.01}},
    {"sparsepo_mask": "mapo"},
], ids=["learned-common", "learned-independent", "mapo"])
def test_tiny_training_updates_policy_and_mask_heads(tiny, tmp_path, variant):
    model, tokenizer = tiny
    trainer = sparse_trainer(model, tokenizer, tmp_path, **variant)
    heads = trainer._sparse.mask_heads
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    heads_before = {name: p.detach().clone() for name, p in heads.named_parameters()} if heads is not None else {}
    trainer.train()

    assert any(not torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())
    if variant["sparsepo_mask"] == "learned":
        changed = [name for name, p in heads.named_parameters() if not torch.equal(p, heads_before[name])]
        assert changed, "the mask heads were not trained"
        assert any(name.startswith("kl.") for name in changed) == bool(heads.independent)
        groups = [g for g in trainer.optimizer.param_groups if any(p is next(heads.parameters()) for p in g["params"])]
        assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01
    else:
        assert heads is None
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    for key in ("sparsepo/reward_mask_sparsity_chosen", "sparsepo/reward_mask_mean_rejected",
                "sparsepo/kl_mask_sparsity_rejected", "sparsepo/kl_rejected"):
        values = [entry[key] for entry in logs]
        assert len(values) == 3 and all(math.isfinite(v) for v in values), key
    assert all(0 <= entry["sparsepo/reward_mask_sparsity_chosen"] <= 1 for entry in logs)


def test_resume_restores_the_mask_heads_exactly(tiny, tmp_path, crash_at_training_step):
    model, tokenizer = tiny
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, sparsepo_mask_dropout=0.0)
    full = sparse_trainer(model, tokenizer, tmp_path / "full", **common)
    full.train()
    full_heads = torch.load(tmp_path / "full" / "out" / "checkpoint-4" / MASK_HEADS_NAME, weights_only=True)

    crash, restore = crash_at_training_step
    crash(PreferenceTrainer, 3)
    crashed = sparse_trainer(model, tokenizer, tmp_path / "crash", **common)
    with pytest.raises(RuntimeError, match="power cut"):
        crashed.train()
    restore()
    checkpoint = tmp_path / "crash" / "out" / "checkpoint-2"
    saved2 = torch.load(checkpoint / MASK_HEADS_NAME, weights_only=True)
    resumed = sparse_trainer(model, tokenizer, tmp_path / "crash", **common)
    fresh = resumed._sparse.mask_heads.state_dict()
    assert any(not torch.equal(fresh[key], saved2[key]) for key in saved2)  # so restoring is observable
    resumed.train(resume_from_checkpoint=str(checkpoint))
    final = torch.load(tmp_path / "crash" / "out" / "checkpoint-4" / MASK_HEADS_NAME, weights_only=True)
    assert final.keys() == full_heads.keys()
    for key, value in full_heads.items():
        torch.testing.assert_close(final[key], value, rtol=0, atol=1e-6, msg=key)


def test_resume_without_mask_heads_fails_clearly(tiny, tmp_path):
    model, tokenizer = tiny
    trainer = sparse_trainer(model, tokenizer, tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    (checkpoint / MASK_HEADS_NAME).unlink()
    again = sparse_trainer(model, tokenizer, tmp_path, max_steps=3, save_strategy="no")
    with pytest.raises(FileNotFoundError, match=MASK_HEADS_NAME):
        again.train(resume_from_checkpoint=str(checkpoint))


def test_resume_from_nan_mask_heads_fails_naming_the_file(tiny, tmp_path):
    model, tokenizer = tiny
    trainer = sparse_trainer(model, tokenizer, tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    path = tmp_path / "out" / "checkpoint-2" / MASK_HEADS_NAME
    heads = torch.load(path, weights_only=True)
    key = next(iter(heads))
    heads[key].view(-1)[0] = float("nan")
    torch.save(heads, path)
    again = sparse_trainer(model, tokenizer, tmp_path, max_steps=3, save_strategy="no")
    with pytest.raises(ValueError, match=rf"{MASK_HEADS_NAME} holds non-finite values .*'{key}'"):
        again.train(resume_from_checkpoint=str(path.parent))


@pytest.mark.parametrize("overrides, match", [
    ({"sparsepo_mask": "mapo", "loss_kwargs": {"independent_masks": True}}, "independent_masks"),
    ({"loss_type": ["sigmoid"], "sparsepo_mask": "mapo"}, "sparsepo_mask"),
    ({"loss_type": ["sigmoid"], "mask_weight_decay": 0.1}, "mask_weight_decay"),
], ids=["mapo-independent", "mask-without-sparsepo", "decay-without-sparsepo"])
def test_bad_combinations_fail_before_training(tiny, tmp_path, overrides, match):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match=match):
        sparse_trainer(model, tokenizer, tmp_path, **overrides)


@pytest.mark.parametrize("field, value", [("sparsepo_mask", "random"), ("sparsepo_mask_dropout", 1.0),
                                          ("mask_weight_decay", -1.0), ("sparsepo_mapo_activations", ["q"])])
def test_config_rejects_bad_values(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        PreferenceConfig(**trainer_test_args(tmp_path, **{field: value}))


def test_learned_masks_refuse_an_external_optimizer(tiny, tmp_path):
    model, tokenizer = tiny
    policy = copy.deepcopy(model)
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    args = PreferenceConfig(**trainer_test_args(tmp_path, loss_type=["sparsepo"], max_length=64))
    with pytest.raises(ValueError, match="optimizers"):
        PreferenceTrainer(model=policy, args=args, train_dataset=preference_pairs(4), processing_class=tokenizer,
                          optimizers=(optimizer, None))
