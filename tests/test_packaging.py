"""The package as a dependency: recipes and accelerate configs by name, console scripts and `python -m` for every
step, a fast `--help`, the version check, compatible ranges, and a built wheel run from outside the repo."""

import configparser
import os
import runpy
import shutil
import site
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from alignment.commands import console, versions
from alignment.commands.packaged import packaged_dir, resolve_accelerate_config, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


# ------------------------------------------------------------------------------------- recipes and configs by name


def test_packaged_folders_are_the_top_level_folders():
    """One copy in git: the package's recipes/accelerate_configs are the repo's top-level folders."""
    for kind in ("recipes", "accelerate_configs"):
        assert packaged_dir(kind).resolve() == (ROOT / kind).resolve()


def test_recipe_by_packaged_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = packaged_dir("recipes") / "tiny" / "dpo.yaml"
    assert Path(resolve_recipe("tiny/dpo")) == packaged
    assert Path(resolve_recipe("smollm2-135m/dpo.yaml")) == packaged_dir("recipes") / "smollm2-135m" / "dpo.yaml"
    # the docs' repo-relative paths work outside a clone
    assert Path(resolve_recipe("recipes/tiny/dpo.yaml")) == packaged
    assert Path(resolve_accelerate_config("zero3")) == packaged_dir("accelerate_configs") / "zero3.yaml"
    # a file that exists wins over a packaged name
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "dpo.yaml").write_text("loss_type: ipo\n")
    assert resolve_recipe("tiny/dpo.yaml") == "tiny/dpo.yaml"


def test_unknown_name_lists_close_names():
    with pytest.raises(FileNotFoundError, match=r"`--config tiny/dpoo` is neither a file nor a packaged name.*"
                                                r"Close names: tiny/dpo"):
        resolve_recipe("tiny/dpoo")
    with pytest.raises(FileNotFoundError, match=r"`--accelerate_config zero4`.*zero3"):
        resolve_accelerate_config("zero4")


def test_parse_recipe_reads_a_packaged_recipe_by_name(tmp_path, monkeypatch):
    from trl import DatasetMixtureConfig, ModelConfig

    from alignment.configs import AlignmentScriptArguments, PreferenceConfig
    from alignment.commands.script_utils import parse_recipe

    monkeypatch.chdir(tmp_path)  # no recipes/ here
    script_args, training_args, *_, recipe = parse_recipe(
        (AlignmentScriptArguments, PreferenceConfig, ModelConfig, DatasetMixtureConfig),
        ["--config", "tiny/dpo", "--output_dir", str(tmp_path / "out")])
    assert training_args.loss_type == ["sigmoid"] and script_args.dataset_name == "task-suite"
    assert recipe["loss_type"] == "sigmoid" and recipe["cli_overrides"] == ["--output_dir", str(tmp_path / "out")]


def test_iterate_and_doremi_resolve_their_recipes_by_name(tmp_path, monkeypatch):
    from alignment.commands.doremi import parse_args
    from alignment.commands.iterate_cli import _train_recipe

    monkeypatch.chdir(tmp_path)
    args, _ = parse_args(["--config", "tiny/doremi", "--output_dir", "out"])
    assert Path(args.config) == packaged_dir("recipes") / "tiny" / "doremi.yaml"
    train = _train_recipe({"config": "recipes/smollm2-135m/irpo.yaml", "beta": 0.5})
    assert train["beta"] == 0.5 and "irpo" in train["loss_type"]


# ---------------------------------------------------------------------------------------- entry points and launch


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy of an imported module
def test_every_step_has_a_console_script_and_a_module(monkeypatch):
    scripts = dict(line.split(" = ") for line in
                   _setup_cfg()["options.entry_points"]["console_scripts"].strip().splitlines())
    assert scripts.pop("alignment") == "alignment.commands.console:main"
    assert {f"alignment-{name}" for name in console.STEPS} <= set(scripts)
    ran = []
    monkeypatch.setattr(console, "run_step", lambda name, argv=None: ran.append(name))
    for name in console.STEPS:
        target = scripts[f"alignment-{name}"].split(":")[1]
        getattr(console, target)()  # the console script's function runs this step
        with pytest.raises(SystemExit):
            runpy.run_module(console.step_module(name), run_name="__main__")  # python -m alignment.<step>
        assert ran[-2:] == [name, name]


def test_accelerate_config_by_name_relaunches_the_step_module(monkeypatch):
    import accelerate.commands.launch as launch

    launched = []
    monkeypatch.setattr(launch, "launch_command", launched.append)
    console.run_step("dpo", ["--config", "tiny/dpo", "--accelerate_config", "zero3", "--beta", "0.2"])
    console.main(["launch", "--accelerate_config", "ddp", "--num_machines", "2", "--machine_rank", "1",
                  "--main_process_ip", "127.0.0.1", "sft", "--config", "tiny/sft"])
    dpo, sft = launched
    assert Path(dpo.config_file) == packaged_dir("accelerate_configs") / "zero3.yaml"
    assert dpo.module and dpo.training_script == "alignment.dpo"
    assert dpo.training_script_args == ["--config", "tiny/dpo", "--beta", "0.2"]
    assert Path(sft.config_file) == packaged_dir("accelerate_configs") / "ddp.yaml"
    assert (sft.num_machines, sft.machine_rank, sft.main_process_ip) == (2, 1, "127.0.0.1")
    assert sft.training_script == "alignment.sft" and sft.training_script_args == ["--config", "tiny/sft"]


def test_help_lists_config_and_the_recipe_fields_without_loading_trainers(tmp_path):
    """The first `--help` imports the dataclasses only (not the trainers, not datasets); the next one prints the cached
    text without importing torch or transformers at all."""
    heavy = ("alignment.commands.cli", "alignment.trainers", "datasets", "transformers", "torch")
    code = (f"import sys; from alignment.commands.console import run_step; run_step('dpo', ['--help']); "
            f"print('LOADED', [m for m in {heavy} if m in sys.modules])")
    env = dict(os.environ, ALIGNMENT_CACHE=str(tmp_path), COLUMNS="100")
    first, second = (subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                    check=True, env=env).stdout for _ in range(2))
    assert "--config RECIPE" in first and "--accelerate_config" in first
    assert "--loss_type" in first and "--model_name_or_path" in first and "--task_domains" in first
    assert "LOADED ['transformers', 'torch']" in first
    assert second.replace("LOADED []", "") == first.replace("LOADED ['transformers', 'torch']", "")
    assert len(list((tmp_path / "help").glob("dpo-*.txt"))) == 1


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("name", [name for name, step in console.STEPS.items() if step.dataclasses])
def test_help_dataclasses_are_what_the_step_parses(name, monkeypatch):
    """The fast `--help` lists the dataclasses the step's main really parses (the table cannot drift)."""
    import alignment.commands.script_utils as script_utils

    def capture(dataclass_types, argv=None):
        raise _Parsed(tuple(dataclass_types))

    monkeypatch.setattr(script_utils, "parse_recipe", capture)
    with pytest.raises(_Parsed) as parsed:
        console._load(console.STEPS[name].main)([])
    assert parsed.value.args[0] == tuple(console._load(t) for t in console.STEPS[name].dataclasses)


# -------------------------------------------------------------------------------------------------------- versions


def test_untested_version_warns_with_the_tested_one_and_the_constraints_file(monkeypatch):
    tested = versions.tested_versions()
    fake = {**{name: tested[name] for name in versions.CHECKED}, "trl": "1.17.0", "torch": tested["torch"] + "+cu130"}
    monkeypatch.setattr(versions.metadata, "version", fake.__getitem__)
    versions.check_versions.cache_clear()
    try:
        expected = r"trl 1\.17\.0 \(tested: 1\.16\.0\).*pip install -c .*constraints\.txt"
        with pytest.warns(versions.UntestedVersionWarning, match=expected):
            assert versions.check_versions() == {"trl": ("1.17.0", "1.16.0")}  # a local label (+cu130) is tested
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            versions.check_versions()  # once per process
    finally:
        versions.check_versions.cache_clear()


def test_tested_stack_lies_inside_the_declared_ranges():
    """constraints.txt (what `make` installs) satisfies install_requires, and each checked dependency has an upper
    bound (installing this package must not pull an untested major/minor release of what it patches)."""
    tested = versions.tested_versions()
    requirements = [Requirement(line) for line in
                    _setup_cfg()["options"]["install_requires"].strip().splitlines()]
    for req in requirements:
        name = req.name.lower().replace("_", "-")
        assert name in tested, f"{name} is not in constraints.txt"
        assert req.specifier.contains(tested[name]), f"{name}=={tested[name]} is outside {req}"
        if name in versions.CHECKED:
            assert any(spec.operator == "<" for spec in req.specifier), f"{req} has no upper bound"
            assert any(spec.operator == ">=" and Version(spec.version) == Version(tested[name])
                       for spec in req.specifier), f"{req}: the lower bound is not the tested version"


# ---------------------------------------------------------------------------------------------- the built wheel


def test_wheel_outside_the_repo_runs_a_packaged_recipe_by_name(tiny_model_dir, tmp_path):
    """Build the wheel, install it (no -e) into a new venv whose dependencies come from this environment, and run
    `alignment-dpo --config tiny/dpo` from a directory that is not the repo."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "outputs", "build", "dist", "*.egg-info", "__pycache__", "tests", "docs", "benchmarks"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")

    def run(*cmd, cwd=tmp_path):
        proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        return proc

    built = run(sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "-w",
                tmp_path / "dist", src)
    # setuptools' "Package 'alignment.data.snapshot' is absent from the `packages` configuration ... would be ignored"
    assert "absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("alignment_toolkit-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel)
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # Dependencies from this environment, after the venv's own site-packages: `alignment` comes from the wheel.
    # Paths in a .pth file are not scanned for .pth files, so this environment's editable install stays inactive.
    (purelib / "test_env_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    imported = run(python, "-c", "import alignment; print(alignment.__file__)", cwd=work).stdout.strip()
    assert Path(imported).is_relative_to(purelib), imported
    listed = run(venv / "bin" / "alignment", "list", cwd=work).stdout
    assert "tiny/dpo" in listed and "zero3" in listed and str(purelib) in listed

    run(venv / "bin" / "alignment-dpo", "--config", "tiny/dpo", "--model_name_or_path", tiny_model_dir,
        "--output_dir", "out", "--max_steps", "1", "--save_strategy", "no", "--eval_max_new_tokens", "2", cwd=work)
    assert (work / "out" / "model.safetensors").is_file()
    assert (work / "out" / "eval_results.json").is_file()

    # A packaged accelerate config by name: `accelerate launch --config_file .../cpu_2proc.yaml -m alignment.sft`.
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    log = run(python, "-m", "alignment", "launch", "--accelerate_config", "cpu_2proc", "--num_processes", "1",
              "--main_process_port", port, "sft", "--config", "tiny/sft", "--model_name_or_path", tiny_model_dir,
              "--output_dir", "sft", "--max_steps", "1", "--eval_after_training", "false", cwd=work).stdout
    assert "[alignment] rank 0 of world size 1" in log
    assert (work / "sft" / "model.safetensors").is_file()
