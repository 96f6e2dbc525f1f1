"""The paper-reproduction layer: the 2-D toy world and the settings of the paper's experiments.

Built on the toolkit (:mod:`stiffkit.diffusion`, :mod:`stiffkit.estimators`), used by the
scripts in ``experiments/`` and by ``paper_repro.ipynb``:

* :mod:`~stiffkit.paper.toy` — :func:`toy_world`: the exact tree mixtures, the learned models
  and the guidance weights in one object; :func:`tree_branches`: the tree's branch geometry;
* :mod:`~stiffkit.paper.alignment` — per-step eigenvector alignment along Heun trajectories
  (Figs. 2–3);
* :mod:`~stiffkit.paper.quality` — sampler-quality runs at the paper's settings (Fig. 4,
  Table 1);
* :mod:`~stiffkit.paper.digits` — :func:`digits_world`: the learned 8×8 digits models with
  CFG / autoguidance, and the image counterparts of those runs (the digits table and grid).
"""

from stiffkit.paper.digits import DigitsWorld, digits_world
from stiffkit.paper.toy import ToyWorld, toy_world, tree_branch_depths, tree_branches

__all__ = ["DigitsWorld", "digits_world",
           "ToyWorld", "toy_world", "tree_branches", "tree_branch_depths"]
