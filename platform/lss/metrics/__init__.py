"""The metrics of the project, one implementation for training validation, evaluation and tuning.

- ``segmentation``: Dice per foreground structure and its macro mean, HD95 per structure (MONAI), per batch
  (``segmentation_metrics``) or streamed (``SegmentationMeter``);
- ``severity``: accuracy, balanced accuracy, macro-F1, per-class recall, the confusion matrix, the RSNA 2024
  sample-weighted log loss and the top-label ECE (``severity_metrics``; scikit-learn's figures);
- ``rsna``: the RSNA 2024 study-level score with its ``any_severe_spinal`` term (``rsna_score``);
- ``calibration``: reliability bins for calibration diagrams and the ECE (``calibration_bins``);
- ``selective``: coverage and selective accuracy of grades stated above a confidence threshold
  (``selective_metrics``).

Conventions shared by every function (``lss.metrics.utils``): a target of -1 means "unknown" and is left out, never
counted as an error; a metric with nothing to measure is NaN, and ``n``/``n_cases`` says how much was measured;
names come from ``lss.anatomy`` (``dice_<Structure.value>``, ``recall_<severity>``). This package imports no stage
of the pipeline (training, evaluation, serving, tuning), so each of them can import it.
"""

from lss.metrics.calibration import calibration_bins
from lss.metrics.rsna import rsna_score
from lss.metrics.segmentation import SegmentationMeter, segmentation_metrics, structure_names
from lss.metrics.selective import selective_metrics
from lss.metrics.severity import SEVERITY_NAMES, severity_metrics
from lss.metrics.utils import LOG_LOSS_EPS

__all__ = [
    "SEVERITY_NAMES",
    "LOG_LOSS_EPS",
    "structure_names",
    "SegmentationMeter",
    "segmentation_metrics",
    "severity_metrics",
    "rsna_score",
    "calibration_bins",
    "selective_metrics",
]
