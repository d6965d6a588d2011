"""Evaluation of a trained model on held-out studies: the metrics of ``lss.metrics``, a JSON and Markdown
report, and figures (confusion matrix, Dice per structure, reliability of the severity probabilities)."""

from lss.evaluation.evaluate import PLOTS, RESULTS_JSON, RESULTS_MD, evaluate_model, format_summary, read_split
from lss.evaluation.plots import plot_confusion_matrix, plot_dice, plot_reliability
from lss.evaluation.segmentation import bootstrap_interval, score_segmentation

__all__ = ["PLOTS", "RESULTS_JSON", "RESULTS_MD", "evaluate_model", "format_summary", "read_split",
           "plot_confusion_matrix", "plot_dice", "plot_reliability", "score_segmentation", "bootstrap_interval"]
