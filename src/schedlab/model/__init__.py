"""The reference denoiser (any data dimension) and the DDPM around it."""
