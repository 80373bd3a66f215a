"""schedlab: which learning-rate schedule to train a diffusion model with, and why."""

__version__ = "0.1.0"
