"""`alignment-generate` / `scripts/generate_pairs.py`: prompts + a verifier -> an on-policy preference dataset.

    python scripts/generate_pairs.py --config recipes/smollm2-135m/generate-pairs.yaml [--num_samples 8 ...]
    python scripts/run_dpo.py --config recipes/smollm2-135m/dpo.yaml --dataset_name <output_dir>

Reads a recipe with TRL's parser (like every entry point), samples `num_samples` completions per prompt of
`dataset_name` / `dataset_train_split`, scores them with `reward_funcs`, pairs them (`alignment.pair_generation`) and
writes `<output_dir>/train.jsonl` (prompt, chosen, rejected, margin, the scores and the prompt's other columns) plus
`<output_dir>/generation.json` (counts, mean score, the arguments). With `dataset_test_split` present in the data,
its prompts are copied unchanged to `<output_dir>/test.jsonl`, so the DPO run that follows evaluates on held-out
prompts it never trained on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..recipe_values import as_list, as_mapping

logger = logging.getLogger("alignment")


@dataclass
class PairGenerationArguments:
    """What `generate_pairs.py` samples, how it scores and pairs, and where it writes."""

    model_name_or_path: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "The policy to sample from: a local path, a Hub id, or an embedded alias."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "Prompts: a Hub id, a local directory or data file, or `task-suite`."})
    dataset_config: str | None = field(default=None, metadata={"help": "`load_dataset(name=)` for `dataset_name`."})
    dataset_train_split: str = field(default="train", metadata={"help": "The split whose prompts are sampled."})
    dataset_test_split: str = field(
        default="test", metadata={"help": "A held-out split copied to `test.jsonl` unchanged, if the data has it."})
    task_domains: list[str] | None = field(
        default=None, metadata={"help": "With `dataset_name: task-suite`: the domains to use (default: all)."})
    train_limit_per_domain: int | None = field(
        default=None, metadata={"help": "With `dataset_name: task-suite`: at most this many prompts per domain."})
    eval_limit_per_domain: int | None = field(
        default=None, metadata={"help": "With `dataset_name: task-suite`: held-out prompts per domain in test.jsonl."})
    dataset_streaming: bool = field(default=False, metadata={"help": "Must stay false: every prompt is sampled."})
    limit: int | None = field(default=None, metadata={"help": "Use at most this many prompts (the first ones)."})
    output_dir: str = field(default="outputs/pairs", metadata={"help": "Where `train.jsonl` is written."})
    num_samples: int = field(default=4, metadata={"help": "Completions sampled per prompt (K >= 2)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Maximum new tokens per completion."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per `generate` call (each gives K sequences)."})
    seed: int = field(default=42, metadata={"help": "Seed of the sampling."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy_reward"],
        metadata={"help": "Reward functions that score the completions, as in GRPO recipes."})
    reward_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Per-reward keyword arguments `{reward: {arg: value}}` (mapping or JSON)."})
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per reward (default all 1): score = sum of weight x reward."})
    strategy: str = field(
        default="best_vs_worst",
        metadata={"help": "`best_vs_worst` (one pair per prompt) or `pass_fail` (every passing vs failing pair)."})
    threshold: float = field(default=0.5, metadata={"help": "`pass_fail`: a completion passes when score >= this."})
    min_margin: float = field(default=0.0, metadata={"help": "Keep only pairs whose score gap is at least this."})
    max_pairs_per_prompt: int | None = field(
        default=None, metadata={"help": "`pass_fail`: at most this many pairs per prompt."})
    record_policy_logps: bool = field(
        default=False,
        metadata={"help": "Also write `round_chosen_logps` / `round_rejected_logps`: each response's log-prob (sum over "
                  "its tokens) under the sampling model, one forward per response, tokenized as the preference "
                  "trainer does. INPO (`loss_type: inpo`) reads them as the round policy pi_t."})
    chat_template: str | None = field(
        default=None, metadata={"help": "Chat template for a model that has none (`chatml` or a Jinja file)."})
    use_vllm: bool = field(
        default=False,
        metadata={"help": "Sample with vLLM's offline engine instead of transformers' `generate` (needs `pip install "
                  "vllm` and a CUDA GPU; refused before anything loads otherwise)."})
    vllm_gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "With `use_vllm`: the share of GPU memory vLLM may take (its own setting)."})

    def __post_init__(self):
        from ..pair_generation import STRATEGIES

        self.reward_kwargs = as_mapping(self.reward_kwargs)
        self.reward_funcs = as_list(self.reward_funcs)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"`strategy` must be one of {list(STRATEGIES)}, got {self.strategy!r}.")
        if self.num_samples < 2:
            raise ValueError(f"`num_samples` must be at least 2 to form pairs, got {self.num_samples}.")
        if self.use_vllm:
            import torch
            from trl.import_utils import is_vllm_available

            if not (is_vllm_available() and torch.cuda.is_available()):
                raise ValueError("`use_vllm: true` needs vLLM (`pip install vllm`) and a CUDA GPU; "
                                 f"vLLM {'is' if is_vllm_available() else 'is not'} installed, CUDA "
                                 f"{'is' if torch.cuda.is_available() else 'is not'} available. Set `use_vllm: "
                                 "false` to sample with transformers' `generate`.")


def _write_jsonl(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate_main(argv: list[str] | None = None) -> dict:
    """Parse the recipe, sample, score, pair, write; returns the summary written to `generation.json`."""
    # Function-level: `--help` imports this module for `PairGenerationArguments` alone (`alignment.commands.console`).
    import torch
    from transformers import AutoModelForCausalLM

    from ..data_layouts import normalize_layouts
    from ..data_loading import load_recipe_datasets, scope_task_suite_fields, split_or_fail
    from ..modeling.model_loading import load_tokenizer
    from ..modeling.models import resolve_model_name_or_path
    from ..pair_generation import (POLICY_LOGPS_COLUMNS, build_pairs, policy_sequence_logps, sample_completions,
                                   sample_completions_vllm, score_completions)
    from ..rewards.sources import RewardModelReward, check_reward_sources, resolve_rewards
    from .script_utils import parse_recipe

    args, *_, recipe = parse_recipe((PairGenerationArguments,), argv)  # (args, [the parser's leftovers,] recipe)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    scope_task_suite_fields((args,), recipe.get("cli_overrides", ()))  # a task-suite recipe pointed at other prompts
    # Rewards and data first: a bad reward, file or layout fails before the model is loaded.
    check_reward_sources(list(args.reward_funcs), args.reward_kwargs)
    data = normalize_layouts(load_recipe_datasets(args, fmt="prompt_only"), "prompt_only")
    prompts = split_or_fail(data, args.dataset_train_split, "dataset_train_split")
    if "prompt" not in prompts.column_names:
        raise ValueError(f"The {args.dataset_train_split!r} split has no `prompt` column (columns: "
                         f"{prompts.column_names}); pair generation samples completions for prompts.")
    if args.limit is not None:
        prompts = prompts.select(range(min(args.limit, len(prompts))))
    if len(prompts) == 0:
        raise ValueError(f"The {args.dataset_train_split!r} split has no prompts.")
    # Each reward is called once on the first prompt, as in GRPO: one that cannot read this data fails now.
    rewards = resolve_rewards(list(args.reward_funcs), args.reward_kwargs, example=prompts[0])

    path = resolve_model_name_or_path(args.model_name_or_path)
    tokenizer = load_tokenizer(path, chat_template=args.chat_template)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for reward in rewards:
        if isinstance(reward, RewardModelReward):
            reward.to(device)
    rows = list(prompts)
    sampling = dict(num_samples=args.num_samples, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_p=args.top_p, seed=args.seed)
    model = None
    if args.use_vllm:
        completions = sample_completions_vllm(path, tokenizer, [row["prompt"] for row in rows], **sampling,
                                              gpu_memory_utilization=args.vllm_gpu_memory_utilization)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.bfloat16 if device == "cuda" else torch.float32).to(device)
        completions = sample_completions(model, tokenizer, [row["prompt"] for row in rows], **sampling,
                                         batch_size=args.batch_size)
    columns = {name: [row[name] for row in rows] for name in prompts.column_names if name != "prompt"}
    scores = score_completions(rewards, [row["prompt"] for row in rows], completions, columns, args.reward_weights,
                               tokenizer)
    pairs, counts = build_pairs(rows, completions, scores, strategy=args.strategy, threshold=args.threshold,
                                min_margin=args.min_margin, max_pairs_per_prompt=args.max_pairs_per_prompt)
    if args.record_policy_logps and pairs:
        if model is None:  # vLLM sampled: the same weights, loaded once more for the teacher-forced forwards
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch.bfloat16 if device == "cuda" else torch.float32).to(device)
        logps = policy_sequence_logps(model, tokenizer, pairs, batch_size=args.batch_size)
        for pair, values in zip(pairs, logps):
            pair.update(zip(POLICY_LOGPS_COLUMNS, values))

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "train.jsonl", pairs)
    if args.dataset_test_split in data and args.dataset_test_split != args.dataset_train_split:
        _write_jsonl(out / "test.jsonl", data[args.dataset_test_split])
    flat = [score for group in scores for score in group if score == score]  # NaN: no reward applied
    summary = {**counts, "completions": sum(len(group) for group in completions),
               "mean_score": sum(flat) / len(flat) if flat else None,
               "pass_rate": (sum(score >= args.threshold for score in flat) / len(flat)) if flat else None,
               "arguments": asdict(args), "model": path}
    (out / "generation.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"{counts['pairs']} pairs from {counts['prompts']} prompts ({counts['prompts_without_pair']} without a "
          f"pair: all completions scored the same); mean score {summary['mean_score']}; written to "
          f"{out / 'train.jsonl'}", flush=True)
    if not pairs:
        raise RuntimeError(f"No pairs: every prompt's {args.num_samples} completions scored the same. Sample more "
                           "(`num_samples`), raise `temperature`, or use a reward that separates them.")
    return summary
