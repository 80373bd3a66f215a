"""The fleet engine: K runs of one model shape trained as one vectorized computation."""
