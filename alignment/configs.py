"""Recipe dataclasses: TRL's configs plus the fields this toolkit adds. Every field is documented in `metadata`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import DPOConfig, ScriptArguments, SFTConfig


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


@dataclass
class PreferenceConfig(DPOConfig):
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

    def __post_init__(self):
        if isinstance(self.loss_kwargs, str):
            self.loss_kwargs = json.loads(self.loss_kwargs)
        self.loss_kwargs = dict(self.loss_kwargs or {})
        super().__post_init__()


@dataclass
class AlignmentSFTConfig(SFTConfig):
    """TRL's `SFTConfig`, unchanged for now; a separate name so recipes stay stable as fields are added."""
