"""The embedded verifiable task suite (:mod:`.tasks`) and its answer checker (:mod:`.answers`).

Names are re-exported lazily (PEP 562) so ``python -m alignment.data.tasks`` does not import the module twice and
importing the package stays cheap.
"""

from importlib import import_module

# `dataset_name` value that selects the embedded verifiable task suite instead of a Hub id or a local path.
TASK_SUITE = "task-suite"

_EXPORTS = {
    "ANSWER_INSTRUCTION": "tasks", "DOMAINS": "tasks", "TaskItem": "tasks", "register_domain": "tasks",
    "generate_tasks": "tasks", "build_snapshot": "tasks", "write_snapshot": "tasks", "load_task_suite": "tasks",
    "to_sft": "tasks", "to_preference": "tasks", "to_prompt_only": "tasks",
    "extract_final_answer": "answers", "normalize_answer": "answers", "is_correct": "answers",
    "accuracy_reward": "answers",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
