"""The diffusion world: exact Gaussian mixtures, learned toy denoisers and samplers."""
