"""Domain-weight update rules: the registry (`registry`), one rule per module, and the weights' state (`state`).

Importing the package registers every rule; a new rule is one new module here plus its import line below.
"""

from .registry import (
    DOMAIN_UPDATES,
    DomainUpdateSpec,
    get_domain_update,
    list_domain_updates,
    register_domain_update,
    update_domain_state,
    update_domain_weights,
    validate_domain_update,
)
from .state import DomainWeightState, check_distribution
from . import cooldown, dga, doge, doremi, group_dro, scalebio, velocitune  # noqa: E402,F401  (each registers its rule)
from .doremi import clipped_excess_loss

__all__ = ["DOMAIN_UPDATES", "DomainUpdateSpec", "get_domain_update", "list_domain_updates", "register_domain_update",
           "update_domain_state", "update_domain_weights", "validate_domain_update", "DomainWeightState",
           "check_distribution", "clipped_excess_loss"]
