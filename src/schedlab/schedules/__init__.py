"""LR schedules: registry (names and parameters, no torch), builders, driver, curves."""
