"""The recipe entry points behind `scripts/run_*.py` and the `alignment-dpo` / `alignment-sft` console scripts.

Each reads a YAML recipe with TRL's parser (`--config recipe.yaml`, CLI overrides), trains, evaluates, saves, and
pushes if asked. They return `(trainer, results)` so tests can inspect a run.
"""

from accelerate import PartialState
from transformers import set_seed
from trl import DatasetMixtureConfig, ModelConfig, SFTTrainer, get_peft_config

from .configs import AlignmentScriptArguments, AlignmentSFTConfig, PreferenceConfig
from .data_loading import load_recipe_datasets, split_or_fail
from .evaluation import evaluate_answers
from .script_utils import (
    answer_eval_dataset,
    evaluate_trained_model,
    finalize_run,
    load_model_and_tokenizer,
    parse_recipe,
    resolve_resume_checkpoint,
    setup_logging,
)
from .trainers import PreferenceTrainer


def dpo_main(argv=None):
    script_args, training_args, model_args, mixture_args, recipe = parse_recipe(
        (AlignmentScriptArguments, PreferenceConfig, ModelConfig, DatasetMixtureConfig), argv
    )
    setup_logging(training_args)
    set_seed(training_args.seed)
    state = PartialState()
    # One line per rank, so a launch that silently started fewer processes than asked is visible in the log.
    print(f"[alignment] rank {state.process_index} of world size {state.num_processes} on {state.device}", flush=True)

    model, tokenizer, model_path = load_model_and_tokenizer(model_args, script_args, training_args)
    data = load_recipe_datasets(script_args, mixture_args, fmt="preference")
    train_dataset = split_or_fail(data, script_args.dataset_train_split, "dataset_train_split")
    eval_dataset = data.get(script_args.dataset_test_split)
    answers = answer_eval_dataset(script_args, data)

    results = {}
    if script_args.eval_before_training and answers is not None and state.is_main_process:
        results["before"] = evaluate_answers(
            model, tokenizer, answers, script_args.eval_max_new_tokens, script_args.eval_batch_size
        )
    state.wait_for_everyone()

    # The Trainer would push on every save; we push once, at the end, with our model card and evaluation.
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    trainer = PreferenceTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resolve_resume_checkpoint(training_args))
    trainer.save_model(training_args.output_dir)
    if eval_dataset is not None:
        results["preference"] = trainer.evaluate()
    if trainer.accelerator.is_main_process:
        if answers is not None and script_args.eval_after_training:
            results["after"] = evaluate_trained_model(trainer, tokenizer, answers, script_args, training_args.output_dir)
        results["world_size"] = trainer.accelerator.num_processes
        finalize_run(
            output_dir=training_args.output_dir, method="+".join(training_args.loss_type), base_model=model_path,
            recipe=recipe, results=results, push_to_hub=push_to_hub, hub_model_id=training_args.hub_model_id,
            datasets=[script_args.dataset_name] if script_args.dataset_name else None,
            hub_private=training_args.hub_private_repo,
        )
    trainer.accelerator.wait_for_everyone()
    trainer.end()
    return trainer, results



def sft_main(argv=None):
    script_args, training_args, model_args, mixture_args, recipe = parse_recipe(
        (AlignmentScriptArguments, AlignmentSFTConfig, ModelConfig, DatasetMixtureConfig), argv
    )
    setup_logging(training_args)
    set_seed(training_args.seed)
    state = PartialState()
    # One line per rank, so a launch that silently started fewer processes than asked is visible in the log.
    print(f"[alignment] rank {state.process_index} of world size {state.num_processes} on {state.device}", flush=True)

    model, tokenizer, model_path = load_model_and_tokenizer(model_args, script_args, training_args)
    data = load_recipe_datasets(script_args, mixture_args, fmt="sft")
    train_dataset = split_or_fail(data, script_args.dataset_train_split, "dataset_train_split")
    eval_dataset = data.get(script_args.dataset_test_split) if training_args.eval_strategy != "no" else None
    answers = answer_eval_dataset(script_args, data)

    results = {}
    if script_args.eval_before_training and answers is not None and state.is_main_process:
        results["before"] = evaluate_answers(
            model, tokenizer, answers, script_args.eval_max_new_tokens, script_args.eval_batch_size
        )
    state.wait_for_everyone()

    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=resolve_resume_checkpoint(training_args))
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        if answers is not None and script_args.eval_after_training:
            results["after"] = evaluate_trained_model(trainer, tokenizer, answers, script_args, training_args.output_dir)
        results["world_size"] = trainer.accelerator.num_processes
        finalize_run(
            output_dir=training_args.output_dir, method="sft", base_model=model_path, recipe=recipe, results=results,
            push_to_hub=push_to_hub, hub_model_id=training_args.hub_model_id,
            datasets=[script_args.dataset_name] if script_args.dataset_name else None,
            hub_private=training_args.hub_private_repo,
        )
    trainer.accelerator.wait_for_everyone()
    trainer.end()
    return trainer, results

