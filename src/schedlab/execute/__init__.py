"""Executing a plan: the driver (claim -> train -> measure -> commit) and the executors."""
