"""alignment: preference losses, group-relative RL and data-mixture reweighting on top of TRL."""

__version__ = "0.1.0"
