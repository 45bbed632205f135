"""A start-up check that names an untested version of the stack this package builds on, before anything fails deep
inside a trainer.

setup.cfg allows compatible ranges (so the package installs next to other tools); the exact stack the tests ran on
is `constraints.txt` (shipped as `alignment/constraints.txt`). A version outside it is allowed but may break private
TRL/transformers internals this package subclasses, so the check warns, once per process, and never fails. It reads
package metadata only (no imports of torch or transformers), so it costs milliseconds.
"""

from __future__ import annotations

import functools
import warnings
from importlib import metadata
from pathlib import Path

# The stack whose internals this package relies on (see the comments on `install_requires` in setup.cfg).
CHECKED = ("torch", "transformers", "trl", "peft", "accelerate", "datasets")


class UntestedVersionWarning(UserWarning):
    """An installed dependency differs from the tested version in constraints.txt."""


def constraints_file() -> Path:
    return Path(__file__).resolve().parents[1] / "constraints.txt"  # alignment/constraints.txt, beside the package root


def tested_versions(path: Path | None = None) -> dict[str, str]:
    """``{name: version}`` from the ``name==version`` lines of the constraints file (names lower-cased)."""
    tested = {}
    for line in (path or constraints_file()).read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            tested[name.strip().lower().replace("_", "-")] = version.strip()
    return tested


def _public(version: str) -> str:
    # `2.13.0+cpu` is the tested `2.13.0` built for CPU: the local label names a build, not an API.
    return version.split("+", 1)[0]


def untested_versions(packages=CHECKED, installed=None) -> dict[str, tuple[str, str]]:
    """``{name: (installed, tested)}`` for each of ``packages`` whose installed version is not the tested one."""
    tested, installed = tested_versions(), installed or metadata.version
    found = {}
    for name in packages:
        try:
            version = installed(name)
        except metadata.PackageNotFoundError:
            continue  # pip would have refused the install; an import error says more than a warning here
        if name in tested and _public(version) != _public(tested[name]):
            found[name] = (version, tested[name])
    return found


@functools.cache
def check_versions() -> dict[str, tuple[str, str]]:
    """Warn (once per process) naming every untested version, the tested one, and how to install the tested stack."""
    found = untested_versions()
    if found:
        listed = ", ".join(f"{name} {have} (tested: {want})" for name, (have, want) in found.items())
        warnings.warn(
            f"alignment was tested with a different stack: {listed}. Private TRL/transformers internals it subclasses "
            f"may have changed; if a run fails inside a trainer, install the tested versions with "
            f"`pip install -c {constraints_file()} <this package>`.",
            UntestedVersionWarning,
            stacklevel=2,
        )
    return found
