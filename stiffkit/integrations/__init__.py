"""Where stiffkit plugs into the tools people sample and train with.

* :mod:`~stiffkit.integrations.k_diffusion` — ERK-Guid samplers with k-diffusion's calling
  convention (and so ComfyUI's), without importing k-diffusion;
* :mod:`~stiffkit.integrations.diffusers` — a diffusers scheduler with ERK-Guid, and EDM
  denoisers from diffusers UNets for :func:`stiffkit.analyze` (needs
  ``pip install stiffkit[diffusers]``).

Nothing heavy is imported here: import the submodule you need.
"""
