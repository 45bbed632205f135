"""Domain-weight update rules (see `alignment.domain_rules.registry`)."""

from .registry import *  # noqa: F401,F403
