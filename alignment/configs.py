"""Recipe dataclasses: TRL's configs plus the fields this toolkit adds. Every field is documented in `metadata`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields

from trl import DPOConfig, GRPOConfig, KTOConfig, RewardConfig, ScriptArguments, SFTConfig

from .advantages import resolve_loss_type
from .data.tasks import check_label_noise
from .masks import check_sparse_settings
from .mixture_config import (  # noqa: F401  (the mixture sections stay importable from the recipe dataclasses)
    HandbookMixtureConfig,
    HandbookMixtureSource,
    MixtureSourceConfig,
    ShareMixtureConfig,
    parse_mixture_sections,
)
from .model_card import check_hub_license
from .recipe_values import as_list, as_mapping, parse_mapping_text
from .reward_objectives import validate_reward_invariance
from .rewards.sources import check_reward_sources
from .unpaired import resolve_unpaired_loss


# Command-line spellings that unset a list field (`--task_domains none` would otherwise give ['none']).
UNSET_WORDS = ("none", "null", "")


def unset_task_domains(value):
    """`None` for an unset `task_domains` (None, [], or one of `UNSET_WORDS`), else the list unchanged."""
    if value is None or (isinstance(value, str) and value.strip().lower() in UNSET_WORDS):
        return None
    if isinstance(value, (list, tuple)) and all(str(v).strip().lower() in UNSET_WORDS for v in value):
        return None
    return value


@dataclass
class AlignmentScriptArguments(ScriptArguments):
    """TRL's script arguments, plus the embedded task suite and the generation-based evaluation."""

    task_domains: list[str] | None = field(
        default=None,
        metadata={
            "help": "With `dataset_name: task-suite`, the domains of the embedded task suite to train and evaluate "
            "on (default: all)."
        },
    )
    train_limit_per_domain: int | None = field(
        default=None,
        metadata={"help": "With `dataset_name: task-suite`, keep at most this many training rows per domain."},
    )
    eval_limit_per_domain: int | None = field(
        default=None,
        metadata={"help": "Held-out prompts per domain for the generation evaluation (default: the whole split)."},
    )
    eval_before_training: bool = field(
        default=False,
        metadata={"help": "Also run the generation evaluation on the untrained model, to show before/after numbers."},
    )
    eval_after_training: bool = field(
        default=True,
        metadata={"help": "Run the generation evaluation (greedy answers scored by the answer checker) after training."},
    )
    eval_max_new_tokens: int = field(
        default=32, metadata={"help": "Maximum new tokens per greedy answer in the generation evaluation."}
    )
    eval_batch_size: int = field(default=32, metadata={"help": "Prompts per generation batch in the evaluation."})
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "Chat template for a model that has none: `chatml`, or a path to a Jinja file. Leave unset to "
            "use the model's own template."
        },
    )
    task_label_noise: float = field(
        default=0.0,
        metadata={
            "help": "With `dataset_name: task-suite` (preference data), a label-noise tier in [0, 1]: in each domain "
            "exactly round(noise * n) training pairs get chosen/rejected swapped (a fixed per-domain draw, the same "
            "in every run and independent of `seed` and of the other domains), marked by a boolean `label_flipped` "
            "column. 0.5 makes the labels uninformative; above 0.5 they are mostly inverted. The test split is never "
            "flipped. Default 0: clean data, no extra column."
        },
    )

    task_answer_style: str = field(
        default="final",
        metadata={
            "help": "With `dataset_name: task-suite` (preference data): `final` answers with the bare result; "
            "`worked` shows the one-line calculation of arithmetic and word problems (`39 - 21 = 18` vs "
            "`39 - 21 = 19`), the form small models already use (see docs/demo-results.md)."
        },
    )
    share_mixture: dict | str | None = field(
        default=None,
        metadata={
            "help": "This toolkit's share-based mixture of several datasets (a mapping, or a JSON string on the "
            "command line) with the fields of `ShareMixtureConfig`: `datasets` (each with `path` and `weight` = its "
            "share of the final mixture), `policy` (`cap` or `upsample`), `seed`, optional `temperature` and "
            "`total_size`. Unlike TRL's `datasets:` and the handbook's `dataset_mixture:`, a small source can be "
            "upsampled. See docs/mixtures.md."
        },
    )
    dataset_mixture: dict | str | None = field(
        default=None,
        metadata={
            "help": "The alignment-handbook / open-r1 mixture, with their semantics (`HandbookMixtureConfig`): "
            "`datasets` (each `{id, config, split, columns, weight}`, weight = fraction of that dataset's rows kept), "
            "`seed`, `test_split_size`. Handbook recipes load unchanged. See docs/your-data.md."
        },
    )

    merge_adapters_before_push: bool = field(
        default=False,
        metadata={
            "help": "LoRA runs (`use_peft: true`) only. False (default): `output_dir` holds the trained adapter "
            "(adapter_config.json + adapter_model.safetensors, tokenizer, a card naming the base model) and that "
            "adapter is what `push_to_hub` uploads. True: after training and evaluation, the adapter is also merged "
            "into a full-precision copy of the base weights (PEFT `merge_and_unload`) and saved as a full model in "
            "`<output_dir>/merged`, which is pushed instead; the adapter stays in `output_dir`."
        },
    )

    eval_reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Rewards that score the held-out generations, in the forms GRPO's `reward_funcs` takes (a "
            "registered name, `pkg.module:fn`, `path/to/file.py:fn`, a reward-model directory or Hub id); each is "
            "averaged per `domain` and the first one is reported as `accuracy`. Default: a group-RL run's own "
            "`reward_funcs`; otherwise `accuracy_reward` (the final-answer check) on an `answer` column, or "
            "`math_verify_reward` on a `solution` column."
        },
    )
    eval_reward_kwargs: dict | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments per evaluation reward, `{reward: {arg: value}}` (a mapping or JSON)."},
    )
    hub_license: str | None = field(
        default=None,
        metadata={"help": "The model card's `license`, a Hub license identifier (apache-2.0, mit, llama3.1, ...). "
                  "Default: the base model's when known (the embedded SmolLM2: apache-2.0), else `unknown`."},
    )

    def __post_init__(self):
        check_hub_license(self.hub_license)

        self.eval_reward_kwargs = as_mapping(self.eval_reward_kwargs)
        self.eval_reward_funcs = as_list(self.eval_reward_funcs)

        check_label_noise(self.task_label_noise)
        if self.task_answer_style not in ("final", "worked"):
            raise ValueError(f"`task_answer_style` must be `final` or `worked`, got {self.task_answer_style!r}.")
        self.task_domains = unset_task_domains(self.task_domains)
        self.share_mixture, self.dataset_mixture = parse_mixture_sections(share_mixture=self.share_mixture,
                                                                          dataset_mixture=self.dataset_mixture)


@dataclass
class DomainReweightingArguments:
    """Online domain reweighting (DoReMi arXiv 2305.10429, Velocitune arXiv 2411.14318, "Upsample or Upweight?"
    arXiv 2410.04579), shared by the trainers' configs. Needs a `domain` column in the training data; see
    docs/domain-reweighting.md. Off unless `domain_reweighting` is set."""

    domain_reweighting: str | None = field(
        default=None,
        metadata={
            "help": "Update rule for the domain weights, from `alignment.domain_rules.list_domain_updates()` "
            "(`doremi`, `doge`, `velocitune`, `cooldown`, `group_dro`), or `static` to keep the initial weights fixed. Weights are "
            "updated at every optimizer step from the per-domain training losses (DoGE: gradients) of all processes, "
            "logged as `domain_weight/<name>`, "
            "saved in checkpoints and written to `output_dir/domain_weights.json` at the end. Unset: off."
        },
    )
    domain_reweighting_mode: str = field(
        default="upweight",
        metadata={
            "help": "`upweight`: keep the data order and scale each example's loss by w_d / q_d (q_d: the domain's "
            "share of the training data; K·w_d for K equal domains). `upsample`: draw each example's domain from "
            "the weights (with replacement) and leave the loss unweighted."
        },
    )
    domain_reweighting_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Hyper-parameters of the update rule (e.g. DoReMi's step size and smoothing), as a mapping or a "
            "JSON string. A key the rule does not take is an error."
        },
    )
    domain_initial_weights: dict | str | None = field(
        default=None,
        metadata={
            "help": "Starting weights by domain name (a mapping, a JSON string, or a JSON/YAML file such as "
            "scripts/run_doremi.py's output); normalised to sum to 1. Default: uniform."
        },
    )
    domain_temperature: float | None = field(
        default=None,
        metadata={
            "help": "Starting weights from temperature sampling p_i ∝ n_i^(1/T) over the domain sizes n_i: 1 = data "
            "proportions, large = uniform. Exclusive with `domain_initial_weights`."
        },
    )
    domain_reference_losses: dict | str | None = field(
        default=None,
        metadata={
            "help": "Per-domain reference losses (DoReMi: the reference model's loss; Velocitune: the target loss), "
            "as a mapping, a JSON string or a file (scripts/run_doremi.py writes one)."
        },
    )
    domain_reference_model: str | None = field(
        default=None,
        metadata={
            "help": "SFT with `domain_reweighting: doremi`: a reference model whose per-token losses give DoReMi's "
            "per-token excess loss max(l_theta - l_ref, 0) (the paper's definition). Costs one extra forward per "
            "step."
        },
    )
    domain_update_every: int = field(
        default=1, metadata={"help": "Update the weights every this many optimizer steps (Velocitune's m)."}
    )
    domain_upweight_normalize: bool = field(
        default=False,
        metadata={
            "help": "Upweight mode: divide the weighted loss by the sum of the example weights (DoReMi's proxy loss) "
            "instead of the batch size (the unbiased scalarisation of \"Upsample or Upweight?\")."
        },
    )
    domain_doge_last_layers: int = field(
        default=1,
        metadata={
            "help": "`domain_reweighting: doge` (SFT, preference): per-domain gradients are taken w.r.t. the trainable "
            "parameters of the last this many decoder blocks (one extra partial backward per domain present in a "
            "micro-batch). Ignored when `domain_doge_params` is set."
        },
    )
    domain_doge_params: str | None = field(
        default=None,
        metadata={
            "help": "`domain_reweighting: doge`: a regular expression over parameter names selecting the parameters "
            "of the per-domain gradients instead of the last blocks, e.g. `lm_head` or `.*` (the full gradient, as "
            "the official DoGE code; one full extra backward per domain)."
        },
    )

    def __post_init__(self):
        for name in ("domain_reweighting_kwargs", "domain_initial_weights", "domain_reference_losses"):
            value = getattr(self, name)
            if isinstance(value, str) and value.lstrip().startswith("{"):  # a file path stays a path (load_mapping)
                setattr(self, name, parse_mapping_text(value, field_name=name))
        self.domain_reweighting_kwargs = dict(self.domain_reweighting_kwargs or {})
        if self.domain_reweighting_mode not in ("upweight", "upsample"):
            raise ValueError(
                f"`domain_reweighting_mode` must be `upweight` or `upsample`, got {self.domain_reweighting_mode!r}."
            )
        if self.domain_update_every < 1:
            raise ValueError(f"`domain_update_every` must be >= 1, got {self.domain_update_every}.")
        if self.domain_temperature is not None and not self.domain_temperature > 0:
            raise ValueError(f"`domain_temperature` must be > 0, got {self.domain_temperature}.")
        if self.domain_reference_model is not None and self.domain_reweighting != "doremi":
            raise ValueError("`domain_reference_model` is only used by `domain_reweighting: doremi`; remove it.")
        if self.domain_doge_last_layers < 1:
            raise ValueError(f"`domain_doge_last_layers` must be >= 1, got {self.domain_doge_last_layers}.")
        if self.domain_doge_params is not None:
            try:
                re.compile(self.domain_doge_params)
            except re.error as exc:
                raise ValueError(f"`domain_doge_params` must be a regular expression, got "
                                 f"{self.domain_doge_params!r}: {exc}.") from exc
        super().__post_init__()


@dataclass
class PreferenceConfig(DomainReweightingArguments, DPOConfig):
    """TRL's `DPOConfig` whose `loss_type` names losses of this toolkit's registry (`alignment.losses`).

    TRL's own loss options that the registry replaces (`f_divergence_type`, `ld_alpha`, `use_weighting`) are rejected
    at start-up if changed from their defaults, rather than silently ignored.
    """

    loss_type: list[str] = field(
        default_factory=lambda: ["sigmoid"],
        metadata={
            "help": "Preference loss(es) from the `alignment.losses` registry (e.g. `sigmoid`). Several names are "
            "summed, weighted by `loss_weights`, as in TRL."
        },
    )
    loss_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Hyper-parameters of the selected loss(es) beyond `beta`, as a mapping (or a JSON string on the "
            "command line). A key that no selected loss takes is an error."
        },
    )
    token_weighting: str | None = field(
        default=None,
        metadata={
            "help": "Per-token weighting of the sequence log-probs, from "
            "`alignment.token_weightings.list_token_weightings()`: `tldr` (w = 1 + cos(pi p_t), hard tokens "
            "up-weighted) or `entropy` (w ∝ H_t^alpha, mean 1 per sequence). It composes with any `loss_type`: "
            "policy and reference sums use the same weights. The logged `rewards/*` and `logps/*` are then the "
            "weighted sums too (what the loss saw), not TRL's plain sums. Unset: unweighted."
        },
    )
    token_weighting_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Hyper-parameters of `token_weighting` (e.g. `{\"detach\": false}` for `tldr`, `{\"alpha\": 2}` "
            "for `entropy`), as a mapping or a JSON string on the command line. Unknown keys are an error."
        },
    )
    reference_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Directory of the reference log-prob cache (`alignment.ref_cache`). Per-token reference log-probs "
            "of every train/eval row are computed once, before training, and stored there under a key over the "
            "reference weights, tokenizer, chat template, tokenized data, `max_length`/`truncation_mode` and compute "
            "dtype; a later run with the same key reads them and never loads a reference model. A changed key, or a "
            "partial or corrupted entry, is rebuilt (with a warning). Not for losses that need the reference's full "
            "outputs (e.g. `sparsepo`) nor `sync_ref_model`. Unset: the reference is run at every step."
        },
    )
    ref_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "The reference model pi_ref when it is not the policy's starting weights (a local path, a Hub id "
            "or an embedded alias), loaded with the policy's dtype and attention implementation. `alignment-iterate` "
            "with `reference: base` sets it to the starting model M_0 while each round trains from M_{r-1} (INPO's "
            "fixed pi_ref). Unset: TRL's default, the starting model loaded again (the policy with adapters off "
            "under PEFT)."
        },
    )
    # Redeclared: TRL 1.16's DPOTrainer warns and resets its own `padding_free`; PreferenceTrainer implements it.
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Run policy and reference on the batch's real tokens only: the 2B chosen/rejected sequences are "
            "concatenated into one row with `position_ids` restarting at 0 per sequence and no attention mask, so "
            "transformers builds a block-diagonal causal mask (eager/sdpa/flex) or uses varlen flash-attention. The "
            "per-token log-probs are scattered back, so every loss is unchanged. Pays when sequence lengths vary "
            "widely; a dense-mask attention over the packed row costs O(L^2), see docs/padding-free.md. Checked at "
            "start-up (a probe must reproduce padded log-probs); not for losses needing the reference's hidden "
            "states (`sparsepo`), prompt-learning PEFT or vision-language inputs."
        },
    )

    # SparsePO's token masks (losses that require `sparse_masks`, e.g. `loss_type: sparsepo`). The loss's own
    # hyper-parameters (`lambda_u`, `lambda_d`, `independent_masks`) are in `loss_kwargs`; these fields choose and
    # train the mask machinery, which lives in the trainer (alignment/trainers/sparsepo.py). Changing them without such
    # a loss is an error.
    sparsepo_mask: str = field(
        default="learned",
        metadata={
            "help": "SparsePO mask variant: `learned` (the paper's mask network on the reference model's hidden "
            "states of every layer, LayerNorm -> linear -> ReLU -> dropout per layer, mixed without bias, ReLU; "
            "trained jointly with the policy, saved in checkpoints) or `mapo` (activation-derived from the reference "
            "model: z-normalised, [0, 1]-rescaled activations averaged over layers and kinds; nothing learned, one "
            "mask for reward and KL)."
        },
    )
    sparsepo_mask_dropout: float = field(
        default=0.01,
        metadata={"help": "Dropout after each ReLU of the learned SparsePO mask network (official default 0.01)."},
    )
    mask_weight_decay: float = field(
        default=0.01,
        metadata={
            "help": "Weight decay of the learned SparsePO mask network's parameters (their own optimizer group; the "
            "policy keeps `weight_decay`). Official default 0.01."
        },
    )
    sparsepo_mapo_activations: list[str] = field(
        default_factory=lambda: ["resid", "mlp", "attn", "logits"],
        metadata={
            "help": "With `sparsepo_mask: mapo`, the reference activations averaged into the mask: `resid` (hidden "
            "state after every layer), `mlp` and `attn` (each layer's MLP / attention output), `logits` (mean "
            "logit). Default: all four (the official `activation_hook: all`)."
        },
    )

    def __post_init__(self):
        self.loss_kwargs = as_mapping(self.loss_kwargs)
        self.token_weighting_kwargs = as_mapping(self.token_weighting_kwargs)
        check_sparse_settings(mask=self.sparsepo_mask, dropout=self.sparsepo_mask_dropout,
                              mask_weight_decay=self.mask_weight_decay,
                              mapo_activations=self.sparsepo_mapo_activations)
        super().__post_init__()


@dataclass
class AlignmentSFTConfig(DomainReweightingArguments, SFTConfig):
    """TRL's `SFTConfig` plus online domain reweighting (`domain_*` fields, `DomainReweightingArguments`)."""


# TRL's own default aggregation, for estimators that work with any (GroupRLConfig leaves `loss_type` unset).
# Removed GroupRLConfig flag -> the `hapo` hyper-parameter that replaces it (`clip_by_advantage_sign` alone:
# `policy_loss: sign_clipped`).
_REMOVED_POLICY_FLAGS = {
    "clip_by_advantage_sign": "by_advantage_sign",
    "hapo_adaptive_clip": "adaptive_clip",
    "hapo_advantage_redistribution": "advantage_redistribution",
    "hapo_clip_alpha": "clip_alpha",
    "hapo_adv_beta": "adv_beta",
    "hapo_entropy_pivot": "entropy_pivot",
    "hapo_compat_code": "compat_code",
}
_REMOVED_HELP = "Removed: set `policy_loss` and `policy_loss_kwargs` instead (setting this is an error that says how)."


def _plain(value):
    # The command line gives strings ("true", "0.5"), a YAML recipe typed values.
    if isinstance(value, str):
        try:
            return json.loads(value.lower() if value.lower() in ("true", "false") else value)
        except ValueError:
            return value
    return value


def removed_policy_flags(values: dict) -> None:
    """Fail when a recipe sets one of the clipping flags `policy_loss` replaced, naming the exact replacement."""
    given = {name: _plain(value) for name, value in values.items() if value is not None}
    if not given:
        return
    if given.get("hapo_adaptive_clip") or given.get("hapo_advantage_redistribution"):
        kwargs = {_REMOVED_POLICY_FLAGS[name]: value for name, value in given.items()}
        # The old switches defaulted to off, `hapo`'s to on: spell both out.
        kwargs.setdefault("adaptive_clip", False)
        kwargs.setdefault("advantage_redistribution", False)
        replacement = f"`policy_loss: hapo` and `policy_loss_kwargs: {json.dumps(kwargs)}`"
    elif given.get("clip_by_advantage_sign"):
        replacement = "`policy_loss: sign_clipped`"
    else:  # no switch on: the old flags did nothing (or, `hapo_compat_code` alone, failed)
        replacement = "nothing (remove them: without a switch on they had no effect)"
    raise ValueError(f"{', '.join(f'`{name}`' for name in given)} {'was' if len(given) == 1 else 'were'} removed: "
                     f"policy losses are chosen by name (`alignment.policy_losses`). Use {replacement} instead.")


_TRL_GRPO_LOSS_TYPE = next(f.default for f in fields(GRPOConfig) if f.name == "loss_type")


@dataclass
class GroupRLConfig(DomainReweightingArguments, GRPOConfig):
    """TRL's `GRPOConfig` with advantages from the `alignment.advantages` registry and the clipping variants of
    NGRPO (arXiv 2509.18851), DAPO (arXiv 2503.14476) and HAPO (arXiv 2509.16591).

    Clipping bounds are TRL's `epsilon` (below) and `epsilon_high` (above): NGRPO's official script uses 0.16 / 0.24,
    DAPO's clip-higher 0.2 / 0.28 (set them in the recipe; TRL's default is 0.2 / 0.2). TRL's `scale_rewards` and
    `multi_objective_aggregation` are replaced by `advantage_estimator` / `advantage_kwargs` and rejected at start-up
    if changed.
    """

    advantage_estimator: str = field(
        default="grpo",
        metadata={
            "help": "Advantage estimator from `alignment.advantages.list_advantage_estimators()`: `grpo` (group "
            "mean/std), `dr_grpo` (no std), `ngrpo` (virtual max-reward sample), `rloo`, `drpo`, ..."
        },
    )
    advantage_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Hyper-parameters of `advantage_estimator` (e.g. `{\"r_max\": 1.0, \"k\": 1}` for `ngrpo`), as a "
            "mapping or a JSON string on the command line. Unknown keys are an error."
        },
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy_reward"],
        metadata={
            "help": "Rewards (`alignment.rewards.sources`): a registered name (`accuracy_reward`, `math_verify_reward`, "
            "...), an import path `pkg.module.fn` / `pkg.module:fn`, a file `path/to/file.py:fn`, or a reward model "
            "(directory or Hub id of a num_labels=1 sequence classifier). Several are summed with `reward_weights`."
        },
    )
    reward_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Per-reward keyword arguments, `{reward: {arg: value}}` keyed by the `reward_funcs` string (e.g. "
            "the overlong penalty's lengths; a reward model's `batch_size`, `dtype`), as a mapping or a JSON string."
        },
    )
    reward_weighting: str = field(
        default="fixed",
        metadata={
            "help": "How the rewards of several `reward_funcs` are combined (Lu et al., arXiv 2509.11452): `fixed` "
            "(TRL's `reward_weights`, constant), `gradient` (method (b): before every update the weights move by "
            "w <- softmax(log w + lr * s / regularization), s_k = sum_j <g_k, g_j> from each objective's policy "
            "gradient on the middle decoder layers) or `hypervolume` (method (a): after each evaluation the rewards "
            "are multiplied by m = 0.5 + 1.5 tanh(max(dHV, 0)), dHV the hypervolume gained by the evaluation's mean "
            "rewards; needs an eval dataset and `eval_strategy`). Weights are logged as `reward_weight/<reward>`."
        },
    )
    reward_weighting_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Options of `reward_weighting`, as a mapping or a JSON string. `gradient`: `regularization` "
            "(1e-5), `accumulation_steps` (1), `layers` ([first, last] decoder-layer indices, inclusive; default "
            "the middle of the stack in the paper's proportion, layers 10-25 of 36). `hypervolume`: "
            "`reference_point` (one value per reward; default: the first evaluation's mean rewards) and `maximize` "
            "(one bool per reward, default all true). Initial weights are `reward_weights` (normalised to sum to 1 "
            "for `gradient`)."
        },
    )
    policy_loss: str | None = field(
        default=None,
        metadata={
            "help": "Per-token policy loss from `alignment.policy_losses` (`POLICY_LOSSES.describe()`): `clipped` "
            "(PPO's clip with `epsilon` / `epsilon_high`, as TRL), `sign_clipped` (NGRPO's sign-dependent trust "
            "region), `hapo` (HAPO's entropy-adaptive clipping and advantage redistribution), `apa` (APA's squared "
            "log-ratio regression). Unset: TRL's own GRPO loss. Reduced by TRL's `loss_type` aggregation."
        },
    )
    policy_loss_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Hyper-parameters of `policy_loss` (e.g. `{\"adaptive_clip\": true, \"clip_alpha\": 1.0}` for "
            "`hapo`, `{\"lam\": 0.1}` for `apa`), as a mapping or a JSON string on the command line. Unknown keys "
            "are an error."
        },
    )
    loss_type: str | None = field(
        default=None,
        metadata={
            "help": "TRL's loss aggregation (`grpo`, `dapo`, `dr_grpo`, `bnpo`, ...). Unset: the one the "
            "`advantage_estimator` is derived for (`grpo` for `drpo`), else TRL's default `dapo`. An estimator that "
            "needs one aggregation rejects any other at start-up."
        },
    )
    group_filter: str = field(
        default="none",
        metadata={
            "help": "Dynamic sampling (`alignment.trainers.dynamic_sampling`): `zero_variance` (DAPO: drop groups "
            "whose correctness does not vary, all correct or all wrong), `all_correct` (NGRPO's script: drop only "
            "all-correct groups) or `none`. Correctness is `accuracy_reward` if it is a reward, else the summed "
            "reward (> 0 counts as correct). Dropped groups are replaced by groups of new prompts until the "
            "generation batch is full; logs `group_filter/drop_rate` and `group_filter/generation_rounds`. With "
            "several processes the groups are filtered on the gathered batch (groups may span ranks) and every rank "
            "trains on its equal slice of the kept groups (extra all-gathers when groups were dropped)."
        },
    )
    max_generation_rounds: int = field(
        default=10,
        metadata={
            "help": "With `group_filter`: most generation rounds (the first batch plus refills) per generation "
            "batch; if the batch is still not full the run stops with an error (verl's `max_num_gen_batches`)."
        },
    )
    hapo_temperature_tau: float | None = field(
        default=None,
        metadata={
            "help": "HAPO's adaptive temperature sampling (arXiv 2509.16591; `alignment.sampling.hapo_temperature`): "
            "each completion token is sampled at T_t = T (1 + tau clip(h_t, -1, 1)), h_t the entropy of its "
            "next-token distribution normalised with the statistics of the previous step's rollout (the first step "
            "samples at T). In [0, 1); the official value is 0.05. Unset: off. transformers generation only (not "
            "with `use_vllm`), sampling only (`temperature` > 0). Uses `policy_loss: hapo`'s `entropy_pivot` / "
            "`compat_code` when that is the policy loss. Logs `hapo/temperature_mean`."
        },
    )
    # The clipping flags `policy_loss` replaced. Kept as fields only so that a recipe still setting one fails with an
    # error that names its replacement (`removed_policy_flags`) instead of the parser's "unknown key".
    clip_by_advantage_sign: str | None = field(default=None, metadata={"help": _REMOVED_HELP})
    hapo_adaptive_clip: str | None = field(default=None, metadata={"help": _REMOVED_HELP})
    hapo_advantage_redistribution: str | None = field(default=None, metadata={"help": _REMOVED_HELP})
    hapo_clip_alpha: str | None = field(default=None, metadata={"help": _REMOVED_HELP})
    hapo_adv_beta: str | None = field(default=None, metadata={"help": _REMOVED_HELP})
    hapo_entropy_pivot: str | None = field(default=None, metadata={"help": _REMOVED_HELP})
    hapo_compat_code: str | None = field(default=None, metadata={"help": _REMOVED_HELP})

    def __post_init__(self):
        for name in ("advantage_kwargs", "reward_kwargs", "reward_weighting_kwargs", "policy_loss_kwargs"):
            setattr(self, name, as_mapping(getattr(self, name)))
        removed_policy_flags({name: getattr(self, name) for name in _REMOVED_POLICY_FLAGS})
        self.reward_funcs = as_list(self.reward_funcs)
        self.loss_type = resolve_loss_type(self.advantage_estimator, self.loss_type, default=_TRL_GRPO_LOSS_TYPE)
        check_reward_sources(self.reward_funcs, self.reward_kwargs)  # a bad reward fails before any model loads
        super().__post_init__()


@dataclass
class KTOAlignmentConfig(KTOConfig):
    """TRL's `KTOConfig` whose `loss_type` names a loss of this toolkit's unpaired registry (`alignment.unpaired`).

    ``beta``, ``desirable_weight`` and ``undesirable_weight`` keep TRL's fields, defaults and meaning; the loss's other
    hyper-parameters (if any) go in ``loss_kwargs``. A name or hyper-parameter the registry rejects fails here, when
    the recipe is parsed.
    """

    # Redeclared without TRL's fixed `choices`: the registry lists the valid names.
    loss_type: str = field(
        default="kto",
        metadata={
            "help": "Unpaired loss from the `alignment.unpaired` registry: `kto` (KTO, arXiv 2402.01306: desirable "
            "and undesirable completions against the KL reference point) or `apo_zero_unpaired` (TRL's unpaired "
            "APO-zero: no reference point). The same names and formulas as TRL's `KTOConfig.loss_type`."
        },
    )
    loss_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Hyper-parameters of `loss_type` beyond `beta`, `desirable_weight` and `undesirable_weight`, as a "
            "mapping (or a JSON string on the command line). A key the loss does not take is an error. The built-in "
            "losses take none."
        },
    )

    def __post_init__(self):
        self.loss_kwargs = as_mapping(self.loss_kwargs)
        resolve_unpaired_loss(self)
        super().__post_init__()


@dataclass
class AlignmentRewardConfig(RewardConfig):
    """TRL's `RewardConfig` plus an optional domain-invariance objective (`alignment.reward_objectives`).

    Unset (the default), the reward step is TRL's `RewardTrainer` loss exactly. A name or hyper-parameter the registry
    rejects fails here, when the recipe is parsed; a dataset without two `domain`s fails when the trainer is built.
    """

    reward_invariance: str | None = field(
        default=None,
        metadata={
            "help": "Domain-invariance objective for the Bradley-Terry loss, from `alignment.reward_objectives`: "
            "`vrex` (V-REx, arXiv 2003.00688: + lambda * variance across the batch's domains of the per-domain "
            "Bradley-Terry risks; every domain labelled) or `dial` (DIAL, arXiv 2501.00911: the pairs of "
            "`target_domains` are unlabelled target data, left out of the Bradley-Terry loss; + lambda * a "
            "Wasserstein critic's distance between source and target embeddings). Needs a `domain` column with at "
            "least two domains in the training data. Default: none (TRL's loss)."
        },
    )
    reward_invariance_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Hyper-parameters of `reward_invariance` as a mapping (or a JSON string on the command line). "
            "`vrex`: penalty_weight (lambda, default 1.0), anneal_steps (steps with weight 1 before lambda, "
            "default 0). `dial`: target_domains (required: the unlabelled domains), weight (lambda, 0.01), "
            "critic_layers ([256, 128]), critic_activation (none = the released linear critic; relu, gelu, tanh, "
            "leaky_relu), critic_iterations (3), gradient_penalty (1.0), critic_lr (1e-4), critic_weight_decay "
            "(1e-3)."
        },
    )

    def __post_init__(self):
        self.reward_invariance_kwargs = as_mapping(self.reward_invariance_kwargs)
        if self.reward_invariance in (None, "") or str(self.reward_invariance).lower() in UNSET_WORDS:
            self.reward_invariance = None
            if self.reward_invariance_kwargs:
                raise ValueError("`reward_invariance_kwargs` is set but `reward_invariance` is not: set "
                                 "`reward_invariance` (vrex, dial) or remove the kwargs.")
        else:
            validate_reward_invariance(self.reward_invariance, self.reward_invariance_kwargs)
        super().__post_init__()
