"""What every `scripts/run_*.py` does besides training: parse, load the model, resume, evaluate, save, push."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from ..data import load_task_suite
from ..data_loading import limit_rows_per_domain, scope_task_suite_fields
from ..evaluation import evaluate_answers, format_accuracy_table, write_eval_results
from ..modeling.adapters import MERGED_SUBDIR, is_adapter_dir
from ..modeling.hub import push_folder_to_hub, validate_hub_model_id, write_model_card
from ..modeling.model_loading import load_reference_model, zero3_init_disabled
from ..plots import drop_missing_reporters, plot_run
from ..preemption import PREEMPTED_EXIT_CODE, PreemptionCallback
from ..redaction import detach_hub_token, redact
from ..resume import newest_complete_checkpoint
from ..trainers.finite_guard import NonFiniteGuard
from .packaged import with_resolved_config

logger = logging.getLogger("alignment")



def setup_logging(training_args) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.setLevel(training_args.get_process_log_level())


def parse_recipe(dataclass_types, argv: list[str] | None = None):
    """Parse `--config recipe.yaml` (a path or a packaged recipe name) plus CLI overrides with TRL's parser.

    Precision follows the device unless the recipe says otherwise: TRL defaults to `bf16=True`, which fails or runs
    ~100x slower on a CPU without bf16 units, so on CPU the default becomes fp32; TRL's default gradient
    checkpointing costs time on CPU and saves memory nobody is short of at these sizes, so it is off there. Returns the dataclasses and the
    recipe as a dict (for the model card and `recipe.yaml` next to the checkpoint), with secrets (`hub_token`, in the
    file or in `cli_overrides`) redacted.
    """
    from trl import TrlParser

    # `--config smollm2-135m/dpo` names a packaged recipe when no such file exists (see `alignment.commands.packaged`)
    argv = with_resolved_config(sys.argv[1:] if argv is None else argv)
    parser = TrlParser(dataclass_types)
    if not torch.cuda.is_available():
        parser.set_defaults(bf16=False, fp16=False, gradient_checkpointing=False)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.accelerator.current_accelerator() is None:
        # Several processes on a machine without GPU. accelerate's multi-process launcher does not pass `use_cpu` on
        # to the script, and without it every rank trains alone (world size 1, same output_dir); DeepSpeed needs
        # gloo on CPU (its CPU default is oneCCL). `use_cpu` would bypass DeepSpeed, so it is left out there.
        cpu_defaults = {"ddp_backend": "gloo"}
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
            cpu_defaults["use_cpu"] = True
        parser.set_defaults(**cpu_defaults)
    parsed = parser.parse_args_and_config(args=argv)
    recipe: dict[str, Any] = {}
    if "--config" in argv:
        with open(argv[argv.index("--config") + 1]) as f:
            recipe = yaml.safe_load(f) or {}
    overrides = [a for i, a in enumerate(argv) if a != "--config" and (i == 0 or argv[i - 1] != "--config")]
    if overrides:
        recipe["cli_overrides"] = overrides

    return (*parsed, redact(recipe))


def start_run(dataclass_types, argv: list[str] | None = None):
    """Parse the recipe, set up logging and the seed, and print one line per rank.

    Returns ``(*parsed dataclasses, recipe, state)``. The seed is set before any model is built, so randomly
    initialised heads (reward models, LoRA adapters) are reproducible. An invalid Hub repo id fails here, before any
    model is loaded, rather than at the push after training.
    """
    from accelerate import PartialState
    from transformers import set_seed

    *parsed, recipe = parse_recipe(dataclass_types, argv)
    training_args = next(p for p in parsed if hasattr(p, "get_process_log_level"))
    validate_hub_model_id(hub_model_id=training_args.hub_model_id, push_to_hub=training_args.push_to_hub,
                          output_dir=training_args.output_dir)
    setup_logging(training_args)

    scope_task_suite_fields(parsed, recipe.get("cli_overrides", ()))  # a recipe pointed at other data drops them
    set_seed(training_args.seed)
    state = PartialState()
    # One line per rank, so a launch that silently started fewer processes than asked is visible in the log.
    print(f"[alignment] rank {state.process_index} of world size {state.num_processes} on {state.device}", flush=True)
    return (*parsed, recipe, state)


def resolve_resume_checkpoint(training_args) -> str | bool | None:
    """`resume_from_checkpoint: true` (or `last`) resumes from the newest *complete* checkpoint in `output_dir`.

    Newer checkpoints that a kill or a full disk left incomplete are skipped, with the file that is missing or
    corrupt, never deleted (`alignment.resume`). Announced at WARNING, the level every process logs at by default.
    """
    value = training_args.resume_from_checkpoint
    if isinstance(value, str) and value.lower() in {"true", "last", "yes"}:
        value = True
    if isinstance(value, str) and value.lower() in {"false", "no", "none", ""}:
        value = None
    if value is not True:
        return value
    chosen, skipped = newest_complete_checkpoint(training_args.output_dir, world_size=training_args.world_size,
                                                 save_only_model=training_args.save_only_model)
    say = logger.warning if training_args.should_log else logger.debug  # once, not once per rank
    for checkpoint, problems in skipped:
        say("resume_from_checkpoint: skipping incomplete %s (left as is): %s", checkpoint, "; ".join(problems))
    if chosen is not None:
        say("resume_from_checkpoint: resuming from %s", chosen)
    elif skipped:
        say("resume_from_checkpoint: no complete checkpoint in %s; starting from scratch.", training_args.output_dir)
    else:
        say("resume_from_checkpoint: no checkpoint in %s yet; starting from scratch.", training_args.output_dir)
    return str(chosen) if chosen is not None else None


def train_and_save(trainer_cls, *, model, tokenizer, training_args, model_args, train_dataset, eval_dataset):
    """Build `trainer_cls`, train (resuming if the recipe asks), save the final model to `output_dir`.

    Returns ``(trainer, push_to_hub, hub_token)``: the Trainer would push on every save, so its `push_to_hub` is
    turned off here and the caller pushes once, at the end, with the model card and evaluation (`finalize_run`).
    The token is taken off the arguments too: the Trainer pickles them into `training_args.bin` in every checkpoint.
    On SIGTERM the Trainer saves a checkpoint and stops, and this raises ``SystemExit(143)`` instead of returning
    (`alignment.preemption`).
    """
    from trl import get_peft_config

    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False
    hub_token = detach_hub_token(training_args)
    drop_missing_reporters(training_args)  # `report_to: tensorboard` only where it is installed
    reference = getattr(training_args, "ref_model_name_or_path", None)
    trainer = trainer_cls(
        **({"ref_model": load_reference_model(reference, model, training_args)} if reference else {}),
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.add_callback(NonFiniteGuard())  # a NaN/inf gradient raises before it is applied or saved
    preemption = PreemptionCallback()
    trainer.add_callback(preemption)
    with preemption.handling_signals():
        trainer.train(resume_from_checkpoint=resolve_resume_checkpoint(training_args))
    if preemption.preempted_at is not None:  # a checkpoint, not a finished run: no final save, evaluation or push
        logger.warning(preemption.message(training_args.output_dir, training_args.process_index))
        trainer.end()
        raise SystemExit(PREEMPTED_EXIT_CODE)
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():  # the loss history, even with `save_strategy: no` (for `alignment.plots`)
        trainer.state.save_to_json(os.path.join(training_args.output_dir, "trainer_state.json"))
    return trainer, push_to_hub, hub_token


def save_recipe(output_dir: str, recipe: dict[str, Any]) -> None:
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "recipe.yaml").write_text(yaml.safe_dump(redact(recipe), sort_keys=False))


def model_for_generation(trainer):
    """The trained model, usable for `generate` on this process, or None under ZeRO-3 (weights are sharded)."""
    if trainer.is_deepspeed_enabled:
        plugin = trainer.accelerator.state.deepspeed_plugin
        if plugin is not None and plugin.zero_stage == 3:
            return None
    return trainer.accelerator.unwrap_model(trainer.model)


def answer_eval_dataset(script_args, datasets, have_rewards: bool = False):
    """Held-out prompts for the generation evaluation, or None if the data has none.

    A test split qualifies with a `prompt` column and either a gold column the default rewards read (`answer`,
    `solution`) or, ``have_rewards``, rewards named by the recipe (which may need no gold: a reward model).
    """
    if script_args.dataset_name == "task-suite":
        return load_task_suite(
            "test", "prompt_only", domains=script_args.task_domains, limit_per_domain=script_args.eval_limit_per_domain
        )
    test = datasets.get(script_args.dataset_test_split)
    columns = set(test.column_names) if test is not None else set()
    if "prompt" not in columns or not (have_rewards or columns & {"answer", "solution"}):
        logger.info("No held-out split with `prompt` and a gold (`answer` / `solution`) column, and no "
                    "`eval_reward_funcs`: skipping the generation evaluation.")
        return None

    return limit_rows_per_domain(test, script_args.eval_limit_per_domain)


def evaluate_trained_model(trainer, tokenizer, answers, script_args, output_dir: str, rewards=None):
    """Held-out generations of the trained model scored by ``rewards`` on the main process (reloaded from disk under
    ZeRO-3); see `alignment.evaluation.evaluate_answers`."""
    model = model_for_generation(trainer)
    if model is not None:
        return evaluate_answers(model, tokenizer, answers, max_new_tokens=script_args.eval_max_new_tokens,
                                batch_size=script_args.eval_batch_size, rewards=rewards)
    from transformers import AutoModelForCausalLM

    # Rank 0 alone: with ZeRO-3 registered, `from_pretrained` would build the model inside `deepspeed.zero.Init` and
    # `generate` would default to `synced_gpus=True`; both wait on the other ranks forever.
    with zero3_init_disabled():
        model = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32)
        return evaluate_answers(model, tokenizer, answers, max_new_tokens=script_args.eval_max_new_tokens,
                                batch_size=script_args.eval_batch_size, rewards=rewards)


def finalize_run(*, output_dir: str, method: str, base_model: str, recipe: dict, results: dict, push_to_hub: bool,
                 hub_model_id: str | None, datasets: list[str] | None, hub_private: bool | None = None,
                 merged_dir: str | None = None, hub_token: str | None = None, license: str | None = None) -> None:
    """Main process only: write eval_results.json, recipe.yaml and the model card; push once if asked.

    A LoRA run's `output_dir` holds an adapter: its card says so (`library_name: peft`, the base model) and that
    adapter is pushed. `merged_dir` (from `merge_adapters_before_push`) holds the merged full model: it gets the
    same files and a full-model card, and is pushed instead. `hub_token` (the recipe's, taken off the arguments by
    `train_and_save`) authenticates the push; None falls back to `HF_TOKEN` / the saved login. `license` (the
    recipe's `hub_license`) goes on the card; None: the base model's, when known (`alignment.model_card`).
    """
    tables = {name: r for name, r in results.items() if isinstance(r, dict) and "accuracy" in r}
    if tables:
        print("\nHeld-out generations (greedy), mean reward per domain:")
        print(format_accuracy_table(tables))
    if "preference" in results:
        pref = results["preference"]
        keys = [k for k in ("eval_rewards/accuracies", "eval_rewards/margins", "eval_loss") if k in pref]
        print("Held-out preference metrics: " + ", ".join(f"{k}={pref[k]:.4f}" for k in keys))
    path = write_eval_results(output_dir, results)
    print(f"Evaluation written to {path}")
    save_recipe(output_dir, recipe)

    plot_run(output_dir)  # before the cards, which show output_dir/plots; never raises
    # The full repo id, so that the card's loading snippet names a repo that exists.
    card = dict(model_name=hub_model_id or Path(output_dir).name, base_model=base_model, method=method, recipe=recipe,
                results=results, datasets=datasets, license=license)
    write_model_card(output_dir, **card, adapter=is_adapter_dir(output_dir))
    push_dir, ignore = output_dir, [f"{MERGED_SUBDIR}/*"]  # an adapter push never carries a merged copy
    if merged_dir is not None:
        write_eval_results(merged_dir, results)
        save_recipe(merged_dir, recipe)
        if (Path(output_dir) / "plots").is_dir():  # the merged folder is what gets pushed: its card links these
            shutil.copytree(Path(output_dir) / "plots", Path(merged_dir) / "plots", dirs_exist_ok=True)
        write_model_card(merged_dir, **card, adapter=False)
        push_dir, ignore = merged_dir, []
    if push_to_hub:
        repo_id = hub_model_id or Path(output_dir).name
        url = push_folder_to_hub(push_dir, repo_id, private=bool(hub_private), ignore_patterns=ignore, token=hub_token)
        print(f"Pushed {push_dir} to {url}")
