"""Inference: one study in, masks, grades, findings, a report and its evidence out (``lss diagnose``, Serve)."""

from lss.inference.diagnose import Diagnoser, Diagnosis, match_axial_levels, needs_axial_matching, without_labels
from lss.inference.predict import StudyPrediction, column_spacing, predict_cases
from lss.inference.study_input import open_study, unpack_zip

__all__ = ["Diagnoser", "Diagnosis", "match_axial_levels", "needs_axial_matching", "without_labels", "StudyPrediction", "column_spacing", "predict_cases",
           "open_study", "unpack_zip"]
