"""Training: datasets, losses, trainers, hard-negative mining, model merging."""
