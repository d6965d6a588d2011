"""Stage 1 of the diagnosis chain: a study record -> model-ready arrays, with unlabelled axial series given levels.

    StudyRecord -> without_labels -> preprocess_study (the MONAI transforms of training)
        -> [axial series without a level: a sagittal pass (``find_discs``) finds each disc; match_axial_levels;
            preprocess_study again, its axial series only]
        -> PreparedStudy

No Ray here: ``lss diagnose`` calls this stage in-process, the Serve ``Preprocessor`` deployment wraps it and hands
it callables that reach the ``Segmenter`` deployment (the model lives there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lss.anatomy import LEVELS
from lss.config import PreprocessConfig
from lss.data.manifest import LevelRecord, StudyRecord
from lss.preprocessing.locate import Locator

__all__ = ["PreparedStudy", "StudyPreparer", "match_axial_levels", "needs_axial_matching", "without_labels"]


@dataclass
class PreparedStudy:
    """One study ready for the model.

    Attributes:
        study_id: the study (a request's random id in Serve).
        case: the ``lss.preprocessing.transforms.PreprocessedStudy`` (arrays and the preprocessing ``info``).
        axial_series: how many axial series the study had.
        axial_matched: levels whose axial images were found by the sagittal pass (not by the series' own level).
        seconds: wall time of this stage.
        extras: what a caller attaches for later stages (Serve: the de-identified DICOM headers).
    """

    study_id: str
    case: Any
    axial_series: int = 0
    axial_matched: list[str] = field(default_factory=list)
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return self.case.arrays()

    @property
    def info(self) -> dict[str, Any]:
        return self.case.info

    def summary(self) -> dict[str, Any]:
        """What was done, for a diagnosis' ``info`` (no arrays)."""
        return {"axial_series": self.axial_series, "axial_matched_by_sagittal_pass": list(self.axial_matched)}


def without_labels(record: StudyRecord) -> StudyRecord:
    """A copy of the record with no masks, grades, annotated points or reports: only what a new study holds."""
    record = record.model_copy(deep=True)
    for series in record.series:
        series.mask_path = None
    record.levels = []  # grades, measurements and annotated points are all labels
    record.reports = {}
    return record


def needs_axial_matching(record: StudyRecord, case) -> bool:
    """True when the study has axial series but some level got no axial input (a sagittal pass can match them)."""
    return bool(record.axials()) and not bool(np.all(case.axial_present))


def match_axial_levels(record: StudyRecord,
                       discs: Mapping[str, Sequence[float] | None]) -> tuple[StudyRecord, list[str]]:
    """Gives each level the disc position found on the sagittal view, so that unlabelled axial slices can be matched.

    Levels that already have a point or a level-specific axial series are left alone.

    Args:
        record: the study.
        discs: level -> the disc centre in RAS mm found by a sagittal pass (``lss.inference.predict.disc_centres``),
            or None where none was found.

    Returns:
        A copy of the record with ``point_ras`` set where a disc was found, and the levels that got one.
    """
    record = record.model_copy(deep=True)
    given = {a.level for a in record.axials() if a.level is not None}
    changed = []
    for level in LEVELS:
        point = discs.get(level)
        if point is None or level in given:
            continue
        existing = record.level(level)
        if existing is not None and existing.point_ras is not None:
            continue
        if existing is None:
            record.levels.append(LevelRecord(level=level, point_ras=tuple(float(v) for v in point)))
        else:
            existing.point_ras = tuple(float(v) for v in point)
        changed.append(level)
    return record, changed


# The sagittal pass: PreparedStudy -> level -> disc centre (RAS mm) or None.
FindDiscs = Callable[[PreparedStudy], Mapping[str, Sequence[float] | None]]


class StudyPreparer:
    """Preprocesses a study record as training did, matching unlabelled axial series by a sagittal pass.

    Args:
        config: the preprocessing settings.
        find_discs: the sagittal pass: a ``PreparedStudy`` -> each level's disc centre in RAS mm, or None
            (``StudySegmenter.disc_centres_one`` or a callable that reaches one).
        locate: places the sagittal crop of a study without a mask (``lss.inference.locate.SpineLocator`` or a
            callable that reaches one); None uses the image centre.

    Example::

        preparer = StudyPreparer(config.preprocess, find_discs=segmenter.disc_centres_one,
                                 locate=segmenter.locator(config.preprocess))
        prepared = preparer(open_study(path, workdir))
    """

    def __init__(self, config: PreprocessConfig, find_discs: FindDiscs, locate: Locator | None = None) -> None:
        if not callable(find_discs):
            raise TypeError(f"find_discs must be callable, got {type(find_discs).__name__}.")
        self.config = config
        self.find_discs = find_discs
        self.locate = locate

    def __call__(self, record: StudyRecord, study_id: str | None = None) -> PreparedStudy:
        """Prepares one study; its masks, grades and reports are dropped first (a diagnosis sees only images).

        Args:
            record: the study.
            study_id: the id the study goes by from here on (default: the record's).

        Raises:
            StudyError: when the study cannot be preprocessed (``lss.preprocessing.transforms.preprocess_study``).
        """
        from lss.preprocessing.transforms import preprocess_study

        started = time.perf_counter()
        record = without_labels(record)
        if study_id is not None:
            record.study_id = study_id
        case = preprocess_study(record, self.config, self.locate)
        prepared = PreparedStudy(study_id=record.study_id, case=case, axial_series=len(record.axials()))
        if needs_axial_matching(record, case):
            matched, levels = match_axial_levels(record, self.find_discs(prepared))
            if levels:
                prepared.case = preprocess_study(matched, self.config, self.locate, sagittal_from=case)
                present = prepared.case.axial_present
                prepared.axial_matched = [lv for lv in levels if present[LEVELS.index(lv)]]
        prepared.seconds = time.perf_counter() - started
        return prepared
