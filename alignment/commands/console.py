"""Console scripts (`alignment-dpo`, `-kto`, `-sft`, `-grpo`, `-reward`, `-doremi`, `-generate`, `-iterate`,
`-annotate-margins`, `-prepare-model`, `-warm`, `-plot`), the `alignment <step>` / `alignment launch` /
`alignment list` command, and `python -m alignment.<step>`: one table of steps, one way to run each.

Every step:
- warns once about an untested TRL/transformers/torch/... version (`alignment.commands.versions`);
- takes `--config` as a path or a packaged recipe name (`--config smollm2-135m/dpo`, see `alignment.commands.packaged`);
- with `--accelerate_config NAME|PATH` relaunches itself under `accelerate launch --config_file <config>` (TRL's
  `trl dpo --accelerate_config zero3`); `alignment launch [accelerate launch options] <step> ...` passes any other
  launch option (`--num_processes`, `--num_machines`, `--machine_rank`, `--main_process_ip`, ...);
- answers `--help` from the recipe's dataclasses alone, without importing the trainers, and caches the text (the
  dataclasses need torch and transformers imported: seconds the first time, milliseconds after).

pip's generated wrapper runs ``sys.exit(entry())``; the mains return what they trained (trainer, results) for callers
in Python, and ``sys.exit`` of such a value prints it and exits with status 1. The entries return None (status 0) or
a main's integer status; an exception still exits non-zero with its traceback.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

# Every command starts here, so this module imports nothing of the package at module level: a step's own modules
# (trainers, datasets, torch) load only when it runs, which keeps `--help`, `alignment-plot` and the version check fast.
_RECIPE_DATACLASSES = ("alignment.configs:AlignmentScriptArguments", "{config}", "trl:ModelConfig",
                       "trl:DatasetMixtureConfig")


@dataclass(frozen=True)
class Step:
    main: str  # "module:function", called with the argument list
    summary: str
    # the dataclasses the main parses with TRL's parser ("module:Class"), for the fast `--help`; () = its own argparse
    dataclasses: tuple[str, ...] = ()


def _recipe(config: str) -> tuple[str, ...]:
    return tuple(name.format(config=config) for name in _RECIPE_DATACLASSES)


STEPS = {
    "dpo": Step("alignment.commands.cli:dpo_main", "preference training (DPO and the alignment.losses registry)",
                _recipe("alignment.configs:PreferenceConfig")),
    "kto": Step("alignment.commands.cli:kto_main", "unpaired preference training (KTO; the alignment.unpaired registry)",
                _recipe("alignment.configs:KTOAlignmentConfig")),
    "sft": Step("alignment.commands.cli:sft_main", "supervised fine-tuning (optionally with domain reweighting)",
                _recipe("alignment.configs:AlignmentSFTConfig")),
    "grpo": Step("alignment.commands.cli:grpo_main", "group-relative RL (GRPO and the alignment.advantages registry)",
                 _recipe("alignment.configs:GroupRLConfig")),
    "reward": Step("alignment.commands.reward_cli:reward_main", "Bradley-Terry reward-model training",
                   _recipe("alignment.configs:AlignmentRewardConfig")),
    "generate": Step("alignment.commands.generate_cli:generate_main", "on-policy preference pairs scored by rewards",
                     ("alignment.commands.generate_cli:PairGenerationArguments",)),
    "iterate": Step("alignment.commands.iterate_cli:iterate_main",
                    "iterative on-policy DPO: generate pairs, train, N rounds",
                    ("alignment.commands.iterate_cli:IterativeArguments",)),
    "doremi": Step("alignment.commands.doremi:run_doremi", "two-stage DoReMi domain weights for a data mixture"),
    "annotate-margins": Step("alignment.commands.reward_cli:main",
                             "reward-model margins on preference pairs (for MADPO)"),
    "prepare-model": Step("alignment.modeling.prepare_model:main",
                          "convert the embedded SmolLM2 model into a checkpoint"),
    "warm": Step("alignment.reward_merge:main", "WARM: average reward models trained from one init into one"),
}


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def step_module(name: str) -> str:
    """The module `python -m` runs for a step (`alignment.dpo`, `alignment.annotate_margins`, ...)."""
    return f"alignment.{name.replace('-', '_')}"


def help_text(name: str) -> str:
    """`--help` of a TRL-parsed step from its dataclasses only, with `--config` and `--accelerate_config` listed."""
    from trl import TrlParser

    description = (f"{STEPS[name].summary}. Start from --config RECIPE (a path, or the name of a packaged recipe "
                   "that `alignment list` prints); every option below can be set in it, and flags given here "
                   "override it. --accelerate_config NAME|PATH runs the step under `accelerate launch`.")
    parser = TrlParser([_load(target) for target in STEPS[name].dataclasses], prog=f"alignment-{name}",
                       description=description)
    parser.add_argument("--config", metavar="RECIPE",
                        help="YAML recipe: a path, or a packaged name such as smollm2-135m/dpo (`alignment list`). "
                             "Every field below can be set in it; flags given here override it.")
    parser.add_argument("--accelerate_config", metavar="NAME|PATH",
                        help="run under `accelerate launch --config_file` with this config: a path or a packaged "
                             "name (ddp, zero3, fsdp, ...; `alignment list`).")
    return parser.format_help()


def cached_help_text(name: str) -> str:
    """`help_text(name)`, kept under ``<alignment cache>/help/`` keyed by all it depends on (the versions of the
    libraries that define fields, the source of this package's dataclass modules, the terminal width): building it
    imports torch and transformers (~4 s of CPU, more on a busy machine), reading it takes milliseconds."""
    import hashlib
    import os
    import shutil
    import tempfile
    from importlib import metadata, util
    from pathlib import Path

    from ..modeling.models import cache_dir

    key = hashlib.sha256(f"{shutil.get_terminal_size().columns}".encode())
    for package in ("trl", "transformers", "peft", "accelerate"):
        key.update(f"{package}=={metadata.version(package)}".encode())
    modules = {__name__, *(target.partition(":")[0] for target in STEPS[name].dataclasses)}
    for module in sorted(m for m in modules if m.startswith("alignment.")):
        key.update(Path(util.find_spec(module).origin).read_bytes())
    path = cache_dir() / "help" / f"{name}-{key.hexdigest()[:16]}.txt"
    if path.is_file():
        return path.read_text()
    text = help_text(name)
    try:  # best effort: without a writable cache the help is the same, only slower
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        pass
    return text


def accelerate_launch(name: str, argv: list[str], launch_args: list[str] = ()) -> None:
    """Run step ``name`` under `accelerate launch [launch_args] --module alignment.<step> argv`; a
    `--accelerate_config NAME|PATH` in either list becomes `--config_file <resolved path>`."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    from .packaged import resolve_accelerate_config

    launch_args, argv = list(launch_args), list(argv)
    for args in (launch_args, argv):
        if "--accelerate_config" in args:
            i = args.index("--accelerate_config")
            if i + 1 == len(args):
                raise ValueError("`--accelerate_config` needs a value: a packaged name (`alignment list`) or a path.")
            launch_args += ["--config_file", resolve_accelerate_config(args[i + 1])]
            del args[i:i + 2]
    launch_command(launch_command_parser().parse_args([*launch_args, "--module", step_module(name), *argv]))


def run_step(name: str, argv: list[str] | None = None) -> int | None:
    """Run one step with ``argv`` (default: the command line); see the module docstring."""
    from .versions import check_versions

    argv = list(sys.argv[1:] if argv is None else argv)
    check_versions()
    step = STEPS[name]
    if "--accelerate_config" in argv:
        return accelerate_launch(name, argv)
    if step.dataclasses and ("-h" in argv or "--help" in argv):
        print(cached_help_text(name))
        return None
    result = _load(step.main)(argv)
    return result if isinstance(result, int) else None


def list_packaged() -> str:
    from .packaged import packaged_dir, packaged_names

    return "\n".join(f"{kind} ({packaged_dir(kind)}):\n  " + "\n  ".join(packaged_names(kind))
                     for kind in ("recipes", "accelerate_configs"))


USAGE = """usage: alignment <step> [--config RECIPE] [--accelerate_config NAME|PATH] [options]
       alignment launch [accelerate launch options] <step> [options]
       alignment list

A step is also its own command (`alignment-<step>`) and module (`python -m alignment.<step>`).
`alignment <step> --help` lists the step's options. Steps:
"""


def main(argv: list[str] | None = None) -> int | None:
    """`alignment <step> ...`, `alignment launch [launch options] <step> ...`, `alignment list`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    steps = "".join(f"  {name:<17} {step.summary}\n" for name, step in STEPS.items())
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + steps)
        return None if argv else 2
    if argv[0] == "list":
        print(list_packaged())
        return None
    if argv[0] == "launch":
        # everything before the step name goes to `accelerate launch`, everything after it to the step
        at = next((i for i, a in enumerate(argv[1:], 1) if a in STEPS), None)
        if at is None:
            raise SystemExit(f"alignment launch: name a step after the launch options ({', '.join(STEPS)}).")
        from .versions import check_versions

        check_versions()
        return accelerate_launch(argv[at], argv[at + 1:], argv[1:at])
    if argv[0] not in STEPS:
        raise SystemExit(f"alignment: unknown step {argv[0]!r}.\n\n{USAGE}{steps}")
    return run_step(argv[0], argv[1:])


def dpo() -> int | None:
    return run_step("dpo")


def kto() -> int | None:
    return run_step("kto")


def sft() -> int | None:
    return run_step("sft")


def grpo() -> int | None:
    return run_step("grpo")


def reward() -> int | None:
    return run_step("reward")


def doremi() -> int | None:
    return run_step("doremi")


def generate() -> int | None:
    return run_step("generate")


def iterate() -> int | None:
    return run_step("iterate")


def annotate_margins() -> int | None:
    return run_step("annotate-margins")


def prepare_model() -> int | None:
    return run_step("prepare-model")


def warm() -> int | None:
    return run_step("warm")


def plot() -> None:
    """`alignment-plot OUTPUT_DIR`: redraw a past run's pictures (its own argparse; no recipe, no trainers)."""
    from ..plots import plot_main

    plot_main()
