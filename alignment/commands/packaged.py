"""Recipes and accelerate configs shipped in the package, addressable by name from any directory.

`--config smollm2-135m/dpo` is `recipes/smollm2-135m/dpo.yaml` (the names mirror the folder layout) and
`--accelerate_config zero3` is `accelerate_configs/zero3.yaml`, as TRL's `--accelerate_config zero3` names
`trl/accelerate_configs/zero3.yaml`. `alignment/recipes` and `alignment/accelerate_configs` are symlinks to the
repo's top-level folders, so a clone and an installed wheel read the same files and git holds one copy.

A path that exists always wins; a repo-relative path (`recipes/tiny/dpo.yaml`, as the docs write it) that does not
exist from the current directory falls back to the packaged file of that name.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

# kind (folder in the package) -> the command-line flag that names one, for error messages
KINDS = {"recipes": "--config", "accelerate_configs": "--accelerate_config"}


def packaged_dir(kind: str) -> Path:
    """`alignment/<kind>` of the imported package (the wheel's copy, or the clone's symlinked top-level folder)."""
    return Path(str(resources.files("alignment") / kind))


def packaged_names(kind: str) -> list[str]:
    """Every packaged file of ``kind`` as the name that selects it, e.g. ``["smollm2-135m/dpo", "tiny/dpo", ...]``."""
    root = packaged_dir(kind)
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml"))


def resolve_packaged(value: str, kind: str) -> str:
    """``value`` if it is a file, else the packaged ``<kind>/<value>.yaml``; a clear error listing close names."""
    if Path(value).is_file():
        return value
    name = Path(value).as_posix().removesuffix(".yaml").removeprefix(f"{kind}/")
    candidate = packaged_dir(kind) / f"{name}.yaml"
    if candidate.is_file():
        return str(candidate)
    names = packaged_names(kind)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f"Close names: {', '.join(close)}. " if close else ""
    raise FileNotFoundError(
        f"`{KINDS[kind]} {value}` is neither a file nor a packaged name ({kind}/<name>.yaml in {packaged_dir(kind)}). "
        f"{hint}`alignment list` prints all {len(names)}."
    )


def resolve_recipe(value: str) -> str:
    """The recipe file for `--config` (a path, or a packaged name like ``smollm2-135m/dpo``)."""
    return resolve_packaged(value, "recipes")


def resolve_accelerate_config(value: str) -> str:
    """The accelerate config file for `--accelerate_config` (a path, or a packaged name like ``zero3``)."""
    return resolve_packaged(value, "accelerate_configs")


def with_resolved_config(argv: list[str]) -> list[str]:
    """``argv`` with the value after `--config` replaced by the file it names (TRL's parser opens it as a path)."""
    argv = list(argv)
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        i = argv.index("--config") + 1
        argv[i] = resolve_recipe(argv[i])
    return argv
