"""Training losses, one class per file."""
