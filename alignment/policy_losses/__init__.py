"""Per-token policy losses for group-relative RL (`GroupRLTrainer`), one file per loss."""
