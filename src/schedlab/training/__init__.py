"""Training: the reference loop, the fleet engine, and what both share."""
