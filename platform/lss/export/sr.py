"""A TID 1500 Measurement Report (Comprehensive 3D SR) of a diagnosis: per level, the dural sac measurements and the
grade, each pointing at the segmentation it was measured on and at the source image.

Content tree (``highdicom.sr.MeasurementReport``)::

    Imaging Measurement Report (TID 1500)
      observer: device "lss" (the software, with its version)
      procedure reported: SCT "Imaging procedure"
      Imaging Measurements
        Measurement Group (TID 1410, planar ROI), one per level in ``LEVELS`` order
          Tracking Identifier "L4/L5 central canal" (and a UID)
          Finding: SCT "Vertebral canal"; finding site: SCT "Level of L4/L5 intervertebral disc"
          Algorithm: lss <version> (model_version=<hash>)
          Referenced Segmentation Frame: the spinal canal segment (4) of the level's axial SEG, with the source
              axial image the measurement was made on; for a level without axial data, the spinal canal segment of
              the sagittal SEG with the sagittal source image nearest the mid-sagittal plane
          Area = <dural sac area> mm2           (only when measured: the level had axial data and a canal)
          Diameter = <dural sac AP diameter> mm (idem)
          Severity = Normal/Mild | Moderate | Severe   (the model's grade, the one the text report states)

Values are written as the findings hold them (rounded to 0.1 mm / 0.1 mm2 by ``lss.reporting.measurements``). The
codes are those of ``lss.export.codes``. The report is marked PRELIMINARY and UNVERIFIED: it is a machine reading
for a radiologist to check.
"""

from __future__ import annotations

from collections.abc import Mapping

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from lss.anatomy import LEVELS, Structure
from lss.export.codes import (
    ANATOMICAL_STRUCTURE,
    AP_DIAMETER,
    AREA,
    LSS_CODING_SCHEME,
    MM,
    MM2,
    SEGMENT_TYPES,
    SEVERITY,
    level_site,
    severity_code,
)
from lss.export.identity import ALGORITHM_NAME, MANUFACTURER, MODEL_NAME, SR_SERIES_NUMBER, OutputIdentity
from lss.export.seg import axial_seg_name, sagittal_plane, segment_frame_number
from lss.export.sources import DicomSources, NotDicomError

__all__ = ["build_measurement_report", "tracking_identifier"]


def tracking_identifier(level: str) -> str:
    """The human-readable tracking identifier of a level's measurement group ("L4/L5 central canal")."""
    return f"{level} central canal"


def _segment_reference(seg: Dataset, source: Dataset) -> hd.sr.ReferencedSegmentationFrame:
    return hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        frame_number=segment_frame_number(Structure.CANAL),
        segment_number=Structure.CANAL.index,
        source_image=hd.sr.SourceImageForSegmentation(source.SOPClassUID, source.SOPInstanceUID),
    )


def build_measurement_report(prediction, findings, segmentations: Mapping[str, Dataset], sources: DicomSources,
                             identity: OutputIdentity) -> hd.sr.Comprehensive3DSR:
    """The measurement report of one diagnosis.

    Args:
        prediction: the ``lss.inference.StudyPrediction`` the findings were made from.
        findings: its ``lss.reporting.StudyFindings`` (one finding per level, ``LEVELS`` order).
        segmentations: output name -> SEG dataset, as ``lss.export.write_dicom_outputs`` names them: at least
            "seg_sagittal", and "seg_axial_<level>" for each level whose axial mask was exported.
        sources: the study's de-identified DICOM headers.
        identity: the diagnosis' UIDs (the SR's SOPInstanceUID is ``identity.uid("sr")``).

    Returns:
        The SR document (Comprehensive 3D SR, TID 1500).

    Raises:
        ValueError: when the findings do not list the levels of ``LEVELS`` or "seg_sagittal" is missing.
        NotDicomError: when a level's source image has no DICOM header.
    """
    if [f.level for f in findings.levels] != list(LEVELS):
        raise ValueError(f"findings must hold one finding per level in order {LEVELS}, got "
                         f"{[f.level for f in findings.levels]}.")
    if "seg_sagittal" not in segmentations:
        raise ValueError("segmentations must include 'seg_sagittal' (the fallback reference of every level).")
    sagittal_seg = segmentations["seg_sagittal"]
    plane = sagittal_plane(prediction)
    sagittal_source = sources.nearest_image(sources.sagittal_series, np.asarray(plane.position))
    evidence: dict[str, Dataset] = {}
    groups = []
    for finding in findings.levels:
        measured = finding.measurements
        seg = segmentations.get(axial_seg_name(finding.level))
        if seg is not None and measured.axial_slice is not None:
            slice_info = measured.axial_slice
            try:
                source = sources.image(slice_info["series"], int(slice_info["slice"]))
            except (KeyError, TypeError, IndexError) as error:
                raise NotDicomError(f"level {finding.level}: the axial source image {slice_info!r} is not among "
                                    "the DICOM headers.") from error
        else:
            seg, source = sagittal_seg, sagittal_source
        evidence[str(seg.SOPInstanceUID)] = seg
        evidence[str(source.SOPInstanceUID)] = source
        values = []
        if measured.area_mm2 is not None:
            values.append(hd.sr.Measurement(name=AREA, value=float(measured.area_mm2), unit=MM2))
        if measured.ap_mm is not None:
            values.append(hd.sr.Measurement(name=AP_DIAMETER, value=float(measured.ap_mm), unit=MM))
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=identity.uid(f"tracking {finding.level}"),
                                                         identifier=tracking_identifier(finding.level)),
            referenced_segment=_segment_reference(seg, source),
            finding_type=SEGMENT_TYPES[Structure.CANAL],
            finding_category=ANATOMICAL_STRUCTURE,
            finding_sites=[hd.sr.FindingSite(level_site(finding.level))],
            algorithm_id=identity.sr_algorithm(),
            measurements=values or None,
            # A level that is not assessable, or whose grade is withheld, carries its measurements but no grade.
            qualitative_evaluations=(None if finding.stated_severity is None else
                                     [hd.sr.QualitativeEvaluation(SEVERITY, severity_code(finding.stated_severity))]),
        ))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=identity.device_uid, name=ALGORITHM_NAME, manufacturer_name=MANUFACTURER, model_name=MODEL_NAME))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
    )
    ordered = [sagittal_seg, *[e for uid, e in evidence.items() if uid != str(sagittal_seg.SOPInstanceUID)]]
    return hd.sr.Comprehensive3DSR(
        evidence=ordered,  # the first one gives the (empty) patient and study modules
        content=report,
        series_instance_uid=identity.sr_series_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=identity.uid("sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description="LSS AI measurements",
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        coding_schemes=[LSS_CODING_SCHEME],
    )
