"""Learning: per-label datasets, models, training and evaluation."""
