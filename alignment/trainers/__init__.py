from .collators import ExtraColumnsCollator
from .preference import PreferenceTrainer

__all__ = ["ExtraColumnsCollator", "PreferenceTrainer"]
