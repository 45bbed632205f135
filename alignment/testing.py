"""Test helpers: tiny, fully offline models for tests and smoke runs, example batches and trainer arguments.

Unit tests must not touch the Hub, so the models they train are the tiny random Llama of `alignment.modeling.tiny_model`
(re-exported here; the library builds it there, never from this module).
"""

from __future__ import annotations

from pathlib import Path

from .modeling.tiny_model import SPECIAL_TOKENS, build_tiny_model, build_tiny_tokenizer, save_tiny_model  # noqa: F401


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
