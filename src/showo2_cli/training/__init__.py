"""Training helpers: the synthetic shapes world used to train and evaluate a small demo model."""
