"""Tiny, fully offline models for tests and smoke runs.

Unit tests must not touch the Hub, so the models they train are built here from a config, with random weights and a
byte-level BPE tokenizer trained on a small built-in corpus by `tokenizers`. Both are deterministic: the same seed gives
the same weights and the same vocabulary on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path

# SmolLM2-Instruct's ChatML layout, so tests exercise the same prompt/completion split as the embedded model.
from .models import CHATML_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    words = (
        "what is the answer reply with just the number how many letters are in word reverse string compare which "
        "larger smaller plus minus times equals apples oranges has gives away buys more left total count"
    ).split()
    lines = [" ".join(words)]
    lines += [f"{a} + {b} = {a + b}" for a in range(0, 30) for b in range(0, 30, 7)]
    lines += [f"{a} * {b} = {a * b}" for a in range(0, 13) for b in range(0, 13, 3)]
    lines += ["system user assistant", "The answer is 42.", "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    return lines


def build_tiny_tokenizer(vocab_size: int = 320):
    """Train a byte-level BPE tokenizer offline and wrap it as a `PreTrainedTokenizerFast` with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    # transformers 5 saves only `init_kwargs`: setting the attribute alone would reload as right padding.
    fast.padding_side = "left"
    fast.init_kwargs["padding_side"] = "left"
    return fast


def build_tiny_model(tokenizer, seed: int = 0, hidden_size: int = 32, num_layers: int = 2):
    """A random Llama small enough that a training step takes well under a second on one CPU thread."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def save_tiny_model(path: str | os.PathLike, seed: int = 0, **model_kwargs) -> str:
    """Build the tiny model and tokenizer and save both to `path` (a normal HF checkpoint directory)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed, **model_kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def example_preference_batch(**extras):
    """Two pairs with 2-3 completion tokens and padding; values chosen so sums are easy to check by hand.

    Sequence sums: chosen [-0.75, -3.0], rejected [-2.0, -1.0]; chosen lengths [2, 3], rejected [1, 2];
    log-ratios chosen [1.25, -1.0], rejected [-1.0, 1.0]; DPO margin h = [2.25, -2.0]. ``extras`` are passed to
    `PreferenceBatch` (margin, weight, token weights, ...).
    """
    import torch

    from .losses import PreferenceBatch

    chosen_mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rejected_mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    return PreferenceBatch(
        chosen_logps=torch.tensor([[-0.5, -0.25, 0.0], [-1.0, -1.0, -1.0]]) * chosen_mask,
        rejected_logps=torch.tensor([[-2.0, 0.0, 0.0], [-0.5, -0.5, 0.0]]) * rejected_mask,
        ref_chosen_logps=torch.tensor([[-1.0, -1.0, 0.0], [-1.0, -0.5, -0.5]]) * chosen_mask,
        ref_rejected_logps=torch.tensor([[-1.0, 0.0, 0.0], [-1.0, -1.0, 0.0]]) * rejected_mask,
        chosen_mask=chosen_mask,
        rejected_mask=rejected_mask,
        **extras,
    )


def preference_pairs(n: int = 8, **extra_columns):
    """A small conversational preference dataset (`prompt`/`chosen`/`rejected`), plus optional per-row columns."""
    from datasets import Dataset

    rows = []
    for i in range(n):
        row = {
            "prompt": [{"role": "user", "content": f"What is {i} + {i + 1}?"}],
            "chosen": [{"role": "assistant", "content": str(2 * i + 1)}],
            "rejected": [{"role": "assistant", "content": f"{2 * i + 3} or so"}],
        }
        row.update({name: values[i] for name, values in extra_columns.items()})
        rows.append(row)
    return Dataset.from_list(rows)


def trainer_test_args(tmp_path, **overrides) -> dict:
    """Trainer config kwargs for fast tests: CPU, fp32, batch 4, 2 steps, no saving, no reporting."""
    args = dict(output_dir=str(Path(tmp_path) / "out"), per_device_train_batch_size=4, max_steps=2, report_to="none",
                bf16=False, use_cpu=True, logging_steps=1, seed=0, learning_rate=1e-2, save_strategy="no")
    args.update(overrides)
    return args


def make_preference_trainer(trainer_cls, config_cls, model_dir, tmp_path, dataset, **overrides):
    """`trainer_cls(config_cls(...))` on the model in `model_dir`, with `trainer_test_args`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    args = trainer_test_args(tmp_path, **overrides)
    return trainer_cls(model=AutoModelForCausalLM.from_pretrained(model_dir), args=config_cls(**args),
                       train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(model_dir))


def perturb_parameters_(model, seed: int = 1, scale: float = 0.05) -> None:
    """Add seeded Gaussian noise to every parameter in place (moves a policy away from its reference copy)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def record_generated_advantages(trainer, seen: dict, key: str = "advantages") -> dict:
    """Wrap a GRPO-style trainer's `_generate_and_score_completions` so that every call stores a copy of the
    advantages it returns (group order, before TRL shuffles the batch) in ``seen[key]``; returns ``seen``."""
    generate = trainer._generate_and_score_completions

    def recording(inputs):
        output = generate(inputs)
        seen[key] = output["advantages"].detach().clone()
        return output

    trainer._generate_and_score_completions = recording
    return seen


def float32_sum_tolerance(num_terms: int, magnitude: float, safety: float = 4.0) -> float:
    """Absolute tolerance for comparing two float32 results that sum the same terms in a different order.

    Recursive float32 summation of ``n`` terms has error at most ``(n − 1)·u·Σ|x_i|`` (Higham, *Accuracy and Stability of
    Numerical Algorithms*, §4.2; ``u = ε/2`` the unit roundoff), so two orders differ by at most twice that. A tolerance
    relative to the *result* is wrong for such comparisons: a sum of large terms that nearly cancel (a log-ratio of two
    summed log-probs) has a tiny result and a large rounding error. ``magnitude`` is ``Σ|x_i|``, ``safety`` covers the
    few upstream float32 operations (the terms themselves come from reductions computed in another layout).
    """
    import torch

    return safety * num_terms * torch.finfo(torch.float32).eps * magnitude
