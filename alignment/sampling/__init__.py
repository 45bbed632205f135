"""Sampling-time logits processors for generation in the trainers (transformers' `generate`).

`hapo_temperature`: HAPO's entropy-adaptive per-token temperature.
"""

from .hapo_temperature import HAPOTemperatureProcessor, hapo_temperature, token_entropy

__all__ = ["HAPOTemperatureProcessor", "hapo_temperature", "token_entropy"]
