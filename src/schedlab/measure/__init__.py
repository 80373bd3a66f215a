"""Measuring a trained run: the metric registry and what each metric needs."""
