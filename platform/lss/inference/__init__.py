"""Inference: one study in, masks, grades, findings, a report and its evidence out (``lss diagnose``, Serve).

The chain's stages, with no Ray in them: ``StudyPreparer`` (prepare) -> ``StudySegmenter`` (segment) ->
``lss.reporting.build_findings`` (grade) -> ``lss.reporting.StudyReporter`` (report). ``Diagnoser`` runs them in
one process; the Serve deployments run one each.
"""

from lss.inference.batch import BatchSummary, diagnose_folder
from lss.inference.diagnose import Diagnoser, Diagnosis
from lss.inference.predict import StudyPrediction, column_spacing, predict_cases
from lss.inference.prepare import (
    PreparedStudy,
    StudyPreparer,
    match_axial_levels,
    needs_axial_matching,
    without_labels,
)
from lss.inference.segment import StudySegmenter, model_version
from lss.inference.study_input import open_study, unpack_zip

__all__ = ["Diagnoser", "Diagnosis", "BatchSummary", "diagnose_folder", "PreparedStudy", "StudyPreparer",
           "StudySegmenter", "model_version",
           "match_axial_levels", "needs_axial_matching", "without_labels", "StudyPrediction", "column_spacing",
           "predict_cases", "open_study", "unpack_zip"]
