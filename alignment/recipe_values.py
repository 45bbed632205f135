"""Coercions of recipe field values that YAML and the command line give in different shapes.

YAML gives a mapping or a list where the command line gives a JSON string or one bare word. Every recipe dataclass
(`alignment.configs`, the mixture sections, the generate / iterate drivers) and every reader of a mapping field
(`alignment.trainers.domain_reweighting.load_mapping`) coerces through these, so "JSON string or mapping" and
"word or list" mean the same everywhere. Imports nothing of this package: any module may use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def parse_mapping_text(value: Any, *, field_name: str | None = None, files: bool = False) -> Any:
    """A mapping field as given: a JSON string (command line) parsed, anything else (a mapping, None, an already
    parsed config object) returned unchanged. ``files``: a string naming an existing file is read as JSON/YAML.

    A string that is not JSON raises ValueError naming ``field_name`` (`json.JSONDecodeError` is a ValueError too,
    so callers catching either keep working).
    """
    if not isinstance(value, str):
        return value
    if files and Path(value).is_file():
        return yaml.safe_load(Path(value).read_text())
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        what = f"`{field_name}`" if field_name else "A recipe mapping field"
        raise ValueError(f"{what} must be a mapping, a JSON string{' or an existing file' if files else ''}; "
                         f"got {value!r}.") from exc


def as_mapping(value) -> dict:
    """A recipe's mapping field as a dict: YAML gives a mapping, the command line a JSON string, unset is None."""
    return dict(parse_mapping_text(value) or {})


def as_list(value):
    """A list field given as one bare string (``reward_funcs: accuracy``, ``--reward_funcs accuracy``) as a
    one-element list; a list, a tuple or None unchanged."""
    return [value] if isinstance(value, str) else value
