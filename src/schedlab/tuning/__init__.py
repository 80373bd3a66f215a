"""Equal-budget tuning: search spaces, the trials of a study, and the Optuna search."""
