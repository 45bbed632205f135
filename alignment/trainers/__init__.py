from .preference import ExtraColumnsCollator, PreferenceTrainer

__all__ = ["ExtraColumnsCollator", "PreferenceTrainer"]
