"""Evaluation: metrics (pure), the systems compared, the report, and the baselines."""
