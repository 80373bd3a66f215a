"""Executors run a study's pending runs and commit each result to the store."""
