"""Fine-tuning: config dataclasses (YAML and CLI flags), training data, the loop, runs, the
Mutual Reinforcement Effect ablation."""
