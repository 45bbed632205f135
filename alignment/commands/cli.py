"""The recipe entry points behind `scripts/run_*.py` and the `alignment-dpo` / `-sft` / `-grpo` console scripts.

Each reads a YAML recipe with TRL's parser (`--config recipe.yaml`, CLI overrides), trains, evaluates, saves, and
pushes if asked. They return `(trainer, results)` so tests can inspect a run. `run_recipe` is the one runner behind
them and behind reward-model training (`alignment.commands.reward_cli.reward_main`).
"""

import logging

from trl import DatasetMixtureConfig, ModelConfig

from ..configs import AlignmentScriptArguments, AlignmentSFTConfig, GroupRLConfig, KTOAlignmentConfig, PreferenceConfig
from ..data_layouts import is_trainable_split, normalize_layouts, source_format
from ..data_loading import load_recipe_datasets, split_or_fail
from ..evaluation import evaluate_answers, prepare_evaluation
from ..modeling.adapters import merged_output
from ..modeling.model_loading import load_model_and_tokenizer
from ..trainers import PreferenceTrainer
from ..trainers.group_rl import GroupRLTrainer
from ..trainers.kto import KTOAlignmentTrainer
from ..trainers.sft import DomainSFTTrainer
from .script_utils import answer_eval_dataset, evaluate_trained_model, finalize_run, start_run, train_and_save

logger = logging.getLogger("alignment")


class EvaluationFailed(RuntimeError):
    """The model was trained, saved, carded (and pushed, if asked); an evaluation after training failed."""


def _guarded(errors: dict[str, str], name: str, evaluate):
    """Run one post-training evaluation; a failure is recorded in ``errors`` instead of losing the trained run."""
    try:
        return evaluate()
    except Exception as error:  # any failure: the model is already saved and must still be carded and pushed
        logger.exception("The %s evaluation failed after training; the model is saved and the run goes on.", name)
        errors[name] = f"{type(error).__name__}: {error}"
        return None


def run_recipe(argv, config_cls, trainer_cls, fmt: str, method_of, eval_during_training_only: bool, *,
               load_model=None, model_before_data: bool = False, check_splits=None, answer_evaluation: bool = True,
               evaluate_held_out=None):
    """Parse a recipe, evaluate before (optional), train, save, evaluate after, write results, push (optional).

    What differs between steps, keyword-only: ``load_model(model_args, script_args, training_args) -> (model,
    tokenizer, path)`` (default `load_model_and_tokenizer`); ``model_before_data`` (a reward model's random head is
    drawn right after the seed is set, as it always was); ``check_splits(train_dataset, eval_dataset)`` run before
    training; ``answer_evaluation`` (the greedy-generation evaluation; off for a model that does not generate);
    ``evaluate_held_out(trainer, tokenizer, eval_dataset, training_args, results)`` adds its results after training,
    on the main process, when there is a held-out split.
    """
    script_args, training_args, model_args, mixture_args, recipe, state = start_run(
        (AlignmentScriptArguments, config_cls, ModelConfig, DatasetMixtureConfig), argv
    )
    load_model = load_model or load_model_and_tokenizer  # looked up per call: tests replace it on this module
    if model_before_data:
        model, tokenizer, model_path = load_model(model_args, script_args, training_args)
    # Data before the model: a missing file, a bad layout or an empty split fails in seconds, not after a load.
    data = normalize_layouts(load_recipe_datasets(script_args, mixture_args, fmt=source_format(fmt)), fmt)
    if not model_before_data:
        model, tokenizer, model_path = load_model(model_args, script_args, training_args)
    train_dataset = split_or_fail(data, script_args.dataset_train_split, "dataset_train_split")
    eval_dataset = data.get(script_args.dataset_test_split)
    if check_splits is not None:
        check_splits(train_dataset, eval_dataset)
    if eval_during_training_only and training_args.eval_strategy == "no":
        eval_dataset = None
    if eval_dataset is not None and not is_trainable_split(eval_dataset, fmt):
        # e.g. held-out prompts with answers next to generated pairs: they feed the answer evaluation only
        logger.info("The %r split has no %s columns (it has %s): it is used for the answer evaluation only.",
                    script_args.dataset_test_split, fmt, eval_dataset.column_names)
        eval_dataset = None
    # Held-out generations are scored by the recipe's `eval_reward_funcs`, else (group RL) by the training rewards,
    # else by the default verifier for the gold column (`evaluation.default_eval_rewards`).
    eval_specs, eval_kwargs = script_args.eval_reward_funcs, script_args.eval_reward_kwargs
    if not eval_specs and fmt == "prompt_only":
        eval_specs, eval_kwargs = list(training_args.reward_funcs), dict(training_args.reward_kwargs)
    answers = answer_eval_dataset(script_args, data, have_rewards=bool(eval_specs)) if answer_evaluation else None
    eval_rewards = None
    if answers is not None and (script_args.eval_before_training or script_args.eval_after_training):
        # a layout, a column or a reward the evaluation cannot use fails now, not after training
        eval_rewards = prepare_evaluation(tokenizer, answers, eval_specs, eval_kwargs)

    results = {}
    if script_args.eval_before_training and answers is not None and state.is_main_process:
        results["before"] = evaluate_answers(
            model, tokenizer, answers, script_args.eval_max_new_tokens, script_args.eval_batch_size, eval_rewards
        )
    state.wait_for_everyone()

    trainer, push_to_hub, hub_token = train_and_save(
        trainer_cls, model=model, tokenizer=tokenizer, training_args=training_args, model_args=model_args,
        train_dataset=train_dataset, eval_dataset=eval_dataset,
    )
    # The model is saved. Evaluations after this point may fail (a reward, a data layout, memory): they are
    # recorded, the card is written and the push happens, and only then does the run report the failure.
    errors: dict[str, str] = {}
    if eval_dataset is not None:
        key = "preference" if fmt == "preference" else "eval"
        metrics = _guarded(errors, key, trainer.evaluate)
        if metrics is not None:
            results[key] = metrics
    if trainer.accelerator.is_main_process:
        if evaluate_held_out is not None and eval_dataset is not None:
            _guarded(errors, "held-out", lambda: evaluate_held_out(trainer, tokenizer, eval_dataset, training_args,
                                                                   results))
        if answers is not None and script_args.eval_after_training:
            after = _guarded(errors, "after", lambda: evaluate_trained_model(
                trainer, tokenizer, answers, script_args, training_args.output_dir, eval_rewards))
            if after is not None:
                results["after"] = after
        if errors:
            results["evaluation_errors"] = errors
        results["world_size"] = trainer.accelerator.num_processes
        finalize_run(
            output_dir=training_args.output_dir, method=method_of(training_args), base_model=model_path,
            recipe=recipe, results=results, push_to_hub=push_to_hub, hub_model_id=training_args.hub_model_id,
            datasets=[script_args.dataset_name] if script_args.dataset_name else None,
            hub_private=training_args.hub_private_repo, hub_token=hub_token, license=script_args.hub_license,
            merged_dir=merged_output(trainer, script_args, tokenizer, model_path, training_args.output_dir),
        )
    trainer.accelerator.wait_for_everyone()
    trainer.end()
    if errors:
        raise EvaluationFailed(
            f"Training finished and the model was saved to {training_args.output_dir}"
            + (" and pushed" if push_to_hub and trainer.accelerator.is_main_process else "")
            + f", but evaluation failed: {errors}. See eval_results.json and the log above.")
    return trainer, results


def dpo_main(argv=None):
    """Preference training with a loss from `alignment.losses` (`loss_type`)."""
    return run_recipe(argv, PreferenceConfig, PreferenceTrainer, "preference",
                      lambda args: "+".join(args.loss_type), eval_during_training_only=False)


def kto_main(argv=None):
    """Unpaired preference training (KTO and TRL's unpaired loss types) with a loss from `alignment.unpaired`."""
    return run_recipe(argv, KTOAlignmentConfig, KTOAlignmentTrainer, "unpaired", lambda args: args.loss_type,
                       eval_during_training_only=False)


def sft_main(argv=None):
    """Supervised fine-tuning with TRL's SFTTrainer (plus optional online domain reweighting)."""
    return run_recipe(argv, AlignmentSFTConfig, DomainSFTTrainer, "sft", lambda args: "sft",
                      eval_during_training_only=True)


def grpo_main(argv=None):
    """Group-relative RL (GRPO, Dr. GRPO, DAPO, NGRPO, ...) with advantages from `alignment.advantages`."""
    return run_recipe(argv, GroupRLConfig, GroupRLTrainer, "prompt_only",
                      lambda args: f"group-rl ({args.advantage_estimator})", eval_during_training_only=True)

