"""Sample-quality metrics against an exact Gaussian mixture, with bootstrap intervals and floors.

docs/theory/quality.md: mean NLL alone can be gamed (over-contraction scores *better* than the
truth), so a sampler is judged on several numbers at once, each with a confidence interval and the
value the truth itself gets at the same sample size (the *noise floor*):

* :func:`endpoint_error` — per-sample distance to a converged solve of the same ODE from the
  same noise (pure integration error; its floor is 0 by construction);
* :func:`sliced_wasserstein` — sliced Wasserstein distance to ground-truth samples;
* :func:`nll_stats` — NLL ``−log p_0(x)`` under the true mixture, with an outlier rate;
* :func:`precision_recall` — kNN precision/recall (Kynkäänniemi et al., 2019);
* :func:`component_occupancy` — which mixture components the samples reach;
* :func:`evaluate` — all of them as one DataFrame row, with the settings in one
  :class:`MetricSettings`; :func:`noise_floor` — truth vs truth.

Images of the digits testbed (:func:`stiffkit.diffusion.digits_mixture`) are judged in the
feature space of a small shipped digits classifier
(:func:`~stiffkit.diffusion.metrics.classifier.digits_classifier`):

* :func:`fd_digits` — the testbed's FID, the Fréchet distance (Heusel et al., 2017) between
  Gaussians fitted to the classifier's features (:func:`frechet_distance` on any features);
* :func:`digits_precision_recall` — kNN precision/recall in that feature space;
* :func:`class_consistency` — conditional samples classified as their label;
* :func:`evaluate_images` — these, sliced Wasserstein and endpoint error as one row, with
  real-vs-real (truth-vs-truth) floors.

Confidence intervals are percentile bootstraps over samples (``ci="basic"`` gives the basic,
a.k.a. reverse-percentile, interval instead), drawn from a private generator seeded by
``seed``; the global RNG is never touched. Resamples are represented by their multiplicity
vectors, so mean-type statistics cost one matrix product for all resamples. Two caveats hold
for any bootstrap of these statistics and are part of the contract:

* distance-type metrics (``sw``, ``component_tv``) are biased upwards by roughly their noise
  floor, and resampling with replacement adds that bias once more: when the metric sits near
  its floor the percentile interval lies *above* the estimate. Read such intervals only for
  metrics well above their floor, or compare with the ``*_floor`` columns;
* ``occupancy`` counts distinct components, and a resample drops a component seen once with
  probability ``e⁻¹``; its percentile interval sits *below* the estimate when many components
  are seen only a few times. Compare with ``occupancy_floor`` instead;
* the Fréchet distance is the same kind of distance with a large bias (about ``c (1/n + 1/m)``),
  so its replicates are recentred on the estimate (:func:`frechet_distance`): its interval
  is the spread of FD at these sizes. Near the floor a squared distance is a degenerate
  statistic and the bootstrap overstates that spread (measured on digits features: ~2–4×);
  compare with ``fd_floor`` there.

All arithmetic is float64 numpy; inputs may be torch tensors or numpy arrays ``[n, *dims]``,
flattened over the non-batch dims (docs/conventions.md).

Modules, one per metric family: :mod:`~stiffkit.diffusion.metrics.transport` (endpoint error,
sliced Wasserstein), :mod:`~stiffkit.diffusion.metrics.likelihood` (NLL, outliers),
:mod:`~stiffkit.diffusion.metrics.coverage` (precision/recall, occupancy),
:mod:`~stiffkit.diffusion.metrics.evaluation` (:func:`evaluate`, :func:`noise_floor`),
:mod:`~stiffkit.diffusion.metrics.frechet` (Fréchet distance),
:mod:`~stiffkit.diffusion.metrics.classifier` (the shipped digits classifier),
:mod:`~stiffkit.diffusion.metrics.images` (the classifier-space image metrics) and
:mod:`~stiffkit.diffusion.metrics.image_evaluation` (:func:`evaluate_images`); the
:class:`Estimate` type, the intervals and the random streams they share are in
:mod:`~stiffkit.diffusion.metrics.bootstrap`, the input checks in ``_inputs``.
"""

from stiffkit.diffusion.metrics._inputs import CHUNK_ELEMENTS as CHUNK_ELEMENTS
from stiffkit.diffusion.metrics.bootstrap import CI_METHODS as CI_METHODS
from stiffkit.diffusion.metrics.bootstrap import DEFAULT_LEVEL as DEFAULT_LEVEL
from stiffkit.diffusion.metrics.bootstrap import DEFAULT_NUM_BOOTSTRAP as DEFAULT_NUM_BOOTSTRAP
from stiffkit.diffusion.metrics.bootstrap import Estimate
from stiffkit.diffusion.metrics.coverage import DEFAULT_K as DEFAULT_K
from stiffkit.diffusion.metrics.coverage import DEFAULT_MIN_COUNT as DEFAULT_MIN_COUNT
from stiffkit.diffusion.metrics.coverage import DIRECT_DIM_MAX as DIRECT_DIM_MAX
from stiffkit.diffusion.metrics.coverage import KDTREE_MAX_DIM as KDTREE_MAX_DIM
from stiffkit.diffusion.metrics.coverage import PR_METHODS as PR_METHODS
from stiffkit.diffusion.metrics.coverage import (
    Occupancy,
    PrecisionRecall,
    component_occupancy,
    precision_recall,
)
from stiffkit.diffusion.metrics.evaluation import COLUMNS, MetricSettings, evaluate, noise_floor
from stiffkit.diffusion.metrics.frechet import frechet_distance, gaussian_frechet_distance
from stiffkit.diffusion.metrics.image_evaluation import IMAGE_COLUMNS, evaluate_images
from stiffkit.diffusion.metrics.images import (
    class_consistency,
    digits_precision_recall,
    fd_digits,
    image_features,
    predict_digits,
)
from stiffkit.diffusion.metrics.likelihood import (
    DEFAULT_OUTLIER_QUANTILE as DEFAULT_OUTLIER_QUANTILE,
)
from stiffkit.diffusion.metrics.likelihood import NLLStats, nll_stats
from stiffkit.diffusion.metrics.transport import (
    BOOTSTRAP_PROJECTIONS_2D as BOOTSTRAP_PROJECTIONS_2D,
)
from stiffkit.diffusion.metrics.transport import (
    BOOTSTRAP_PROJECTIONS_ND as BOOTSTRAP_PROJECTIONS_ND,
)
from stiffkit.diffusion.metrics.transport import (
    DEFAULT_NUM_PROJECTIONS as DEFAULT_NUM_PROJECTIONS,
)
from stiffkit.diffusion.metrics.transport import DEFAULT_SW_P as DEFAULT_SW_P
from stiffkit.diffusion.metrics.transport import (
    EndpointError,
    endpoint_error,
    sliced_wasserstein,
)

__all__ = [
    "COLUMNS",
    "EndpointError",
    "Estimate",
    "IMAGE_COLUMNS",
    "MetricSettings",
    "NLLStats",
    "Occupancy",
    "PrecisionRecall",
    "class_consistency",
    "component_occupancy",
    "digits_precision_recall",
    "endpoint_error",
    "evaluate",
    "evaluate_images",
    "fd_digits",
    "frechet_distance",
    "gaussian_frechet_distance",
    "image_features",
    "nll_stats",
    "noise_floor",
    "precision_recall",
    "predict_digits",
    "sliced_wasserstein",
]
