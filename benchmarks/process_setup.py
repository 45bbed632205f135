"""Process settings every benchmark applies before torch is imported (this module must not import it)."""

from __future__ import annotations

import os

# Offline (the Hub is unreachable here), quiet progress bars, no tokenizer thread pool next to torch's.
_DEFAULTS = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def prepare_process(threads: int | None = None) -> None:
    """Set ``OMP_NUM_THREADS`` (when ``threads`` is given: it only takes effect before torch is imported) and the
    defaults above, keeping any value the caller's environment already has."""
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
