"""DICOM outputs end to end on real files: a synthetic DICOM study whose headers carry patient identifiers is diagnosed
with ``--dicom-out``; the SEG files read back (highdicom and pydicom) give the predicted masks and their geometry,
the SR gives back every measurement and grade and references the SEGs, and no identifier reaches any output byte.
A NIfTI study is refused with a clear error before the model runs."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from conftest import REAL_SCAN, copy_dicom_study
from lss.anatomy import LEVELS, Structure
from lss.cli import main
from lss.colours import STRUCTURE_COLOURS
from lss.data.volume import LPS_TO_RAS
from lss.export import (
    STRUCTURES,
    NotDicomError,
    OutputIdentity,
    PlaneGeometry,
    axial_seg_name,
    build_dicom_outputs,
    build_segmentation,
    collect_dicom_sources,
    deidentified_header,
    level_site,
    segment_frame_number,
    severity_code,
    severity_of_code,
    tracking_identifier,
)
from lss.export.codes import AP_DIAMETER, AREA, LSS_SCHEME, MM, MM2, SEGMENT_LABELS, SEGMENT_TYPES, SEVERITY
from lss.inference import Diagnoser, open_study

IDENTIFIERS = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-12345",
    "PatientBirthDate": "19700102",
    "OtherPatientIDs": "OTHER-PID-777",
    "AccessionNumber": "ACC-4242",
    "InstitutionName": "Saint Example Hospital",
    "ReferringPhysicianName": "Smith^Referrer",
}
SECRETS = [b"Doe^Jane", b"Jane", b"PID-12345", b"19700102", b"OTHER-PID-777", b"ACC-4242", b"Saint Example",
           b"Referrer"]


@pytest.fixture(scope="module")
def dicom_study(synth_dicom, tmp_path_factory) -> Path:
    """One synthetic DICOM study (images only) whose headers carry a patient's identifiers."""
    _, records = synth_dicom
    return copy_dicom_study(records, tmp_path_factory.mktemp("export_study") / "study", IDENTIFIERS)


@pytest.fixture(scope="module")
def diagnosed(dicom_study, tiny_model_file, tmp_path_factory):
    """The diagnosis of the study with its DICOM outputs, and the model's axial slab size."""
    from lss.anatomy import LEVELS
    from lss.inference.study_input import open_study

    out = tmp_path_factory.mktemp("export_out")
    diagnoser = Diagnoser(tiny_model_file)
    # The untrained model names no disc, so the axial series cannot be matched by the sagittal pass: they get their
    # level from their description ("AX T2 TSE L4/L5"), as a site's protocol would give it.
    record = open_study(dicom_study, out / "work")
    for series in record.axials():
        series.level = next(level for level in LEVELS if series.description.endswith(level))
    diagnosis = diagnoser.diagnose_record(record, dicom_out=out / "dicom")
    return diagnosis, {name: Path(p) for name, p in diagnosis.dicom.items()}, diagnoser.model.axial_slices


def _expected_plane(affine_ras: np.ndarray, row_axis: int, column_axis: int, origin: tuple[int, int, int]):
    """(position, row step, column step) in LPS mm, computed here from the RAS affine."""
    lps = LPS_TO_RAS @ np.asarray(affine_ras)
    return (lps @ np.array([*origin, 1.0]))[:3], lps[:3, row_axis], lps[:3, column_axis]


def _check_seg(path: Path, mask: np.ndarray, plane: tuple[np.ndarray, np.ndarray, np.ndarray], source: Dataset):
    """The SEG at ``path`` holds ``mask`` (per segment, per frame) on ``plane``, in the source's study and frame."""
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    # One coded segment per structure, numbered by the structure index.
    assert seg.get_segment_numbers() == [s.index for s in STRUCTURES]
    for structure in STRUCTURES:
        description = seg.get_segment_description(structure.index)
        assert description.segmented_property_type == SEGMENT_TYPES[structure]
        assert description.algorithm_identification[0].AlgorithmName == "lss"
    # Per segment, per frame: the raw frames equal the predicted mask's indicator images.
    raw = pydicom.dcmread(path)
    frames = raw.pixel_array.reshape(-1, *mask.shape)
    assert frames.shape[0] == len(STRUCTURES) == int(raw.NumberOfFrames)
    position, row_step, column_step = plane
    for index, item in enumerate(raw.PerFrameFunctionalGroupsSequence):
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(frames[index], (mask == segment).astype(np.uint8))
        np.testing.assert_allclose([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
                                   position, atol=1e-4)
    shared = raw.SharedFunctionalGroupsSequence[0]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    np.testing.assert_allclose(orientation[:3], column_step / np.linalg.norm(column_step), atol=1e-6)
    np.testing.assert_allclose(orientation[3:], row_step / np.linalg.norm(row_step), atol=1e-6)
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                               [np.linalg.norm(row_step), np.linalg.norm(column_step)], atol=1e-6)
    # highdicom's own reader: the label map and its affine (index (frame, row, column) -> LPS).
    volume = seg.get_volume(combine_segments=True)
    np.testing.assert_array_equal(volume.array[0], mask)
    np.testing.assert_allclose(volume.affine[:3, 1], row_step, atol=1e-4)
    np.testing.assert_allclose(volume.affine[:3, 2], column_step, atol=1e-4)
    np.testing.assert_allclose(volume.affine[:3, 3], position, atol=1e-4)
    return seg


def _source(study: Path, series_uid: str) -> Dataset:
    for path in sorted(study.rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.SeriesInstanceUID == series_uid:
            return ds
    raise AssertionError(f"no source file of series {series_uid}")


def test_the_segs_give_back_the_predicted_masks_and_their_geometry(diagnosed, dicom_study):
    diagnosis, paths, axial_slices = diagnosed
    prediction = diagnosis.prediction
    assert prediction.axial_present.any(), "the fixture study should give some level axial data"
    present = [level for level, p in zip(LEVELS, prediction.axial_present, strict=True) if p]
    assert list(paths) == ["seg_sagittal", *[axial_seg_name(level) for level in present], "sr"]
    assert all(path.is_file() for path in paths.values())

    sources = collect_dicom_sources(open_study(dicom_study))
    sagittal = _source(dicom_study, prediction.info["sagittal_series"])
    plane = _expected_plane(prediction.sagittal_affine, 1, 2, (prediction.sagittal_slice, 0, 0))
    _check_seg(paths["seg_sagittal"], prediction.sagittal_mask, plane, sagittal)
    for level in present:
        index = LEVELS.index(level)
        source = _source(dicom_study, prediction.info["axial"][level]["series"])
        plane = _expected_plane(prediction.axial_affines[index], 0, 1, (0, 0, axial_slices // 2))
        seg = _check_seg(paths[axial_seg_name(level)], prediction.axial_masks[index], plane, source)
        # The axial mask lies in the plane of the source slice it was measured on, and highdicom linked the two.
        measured_on = sources.image(prediction.info["axial"][level]["series"],
                                    diagnosis.findings.level(level).measurements.axial_slice["slice"])
        normal = np.cross(plane[2], plane[1])
        offset = np.asarray(measured_on.ImagePositionPatient, dtype=float) - plane[0]
        assert abs(offset @ normal / np.linalg.norm(normal)) < 1e-3
        derived = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
        assert derived.ReferencedSOPInstanceUID == measured_on.SOPInstanceUID


def test_the_sr_gives_back_every_measurement_and_grade_and_references_the_segs(diagnosed):
    diagnosis, paths, _ = diagnosed
    sr = hd.sr.srread(paths["sr"])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    seg_uids = {name: pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
                for name, path in paths.items() if name.startswith("seg_")}
    evidence = {uid for _, _, uid, _ in sr.get_evidence()}
    assert set(seg_uids.values()) <= evidence
    groups = sr.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [tracking_identifier(level) for level in LEVELS]
    for group, finding in zip(groups, diagnosis.findings.levels, strict=True):
        assert group.finding_sites[0].value == level_site(finding.level)
        measured = finding.measurements
        for name, unit, value in ((AREA, MM2, measured.area_mm2), (AP_DIAMETER, MM, measured.ap_mm)):
            found = group.get_measurements(name=name)
            if value is None:
                assert found == []
            else:
                assert len(found) == 1 and found[0].value == pytest.approx(value, abs=1e-9)
                assert found[0].unit == unit
        severity = group.get_qualitative_evaluations(name=SEVERITY)
        if finding.stated_severity is None:  # not assessable or withheld: measurements, but no grade
            assert severity == []
        else:
            assert len(severity) == 1 and severity[0].value == severity_code(finding.stated_severity)
            assert severity_of_code(severity[0].value) is finding.stated_severity
        # The ROI is the spinal canal segment of the level's axial SEG (the sagittal one without axial data).
        reference = group.referenced_segmentation_frame[0].ReferencedSOPSequence[0]
        expected = axial_seg_name(finding.level) if measured.axial_slice is not None else "seg_sagittal"
        assert reference.ReferencedSOPInstanceUID == seg_uids[expected]
        assert int(reference.ReferencedSegmentNumber) == Structure.CANAL.index
    measured_levels = [f for f in diagnosis.findings.levels if f.measurements.area_mm2 is not None]
    assert measured_levels, "the fixture study should give some level a measured dural sac"


def test_no_patient_identifier_reaches_any_output_but_the_uids_link_to_the_study(diagnosed, dicom_study):
    _, paths, _ = diagnosed
    source = pydicom.dcmread(next(dicom_study.rglob("*.dcm")), stop_before_pixels=True)
    for path in paths.values():
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret not in data, f"{secret!r} in {path.name}"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientName == "" and ds.PatientID == "" and ds.AccessionNumber == ""
        assert ds.StudyInstanceUID == source.StudyInstanceUID


def test_the_headers_are_whitelist_copies(dicom_study):
    header = pydicom.dcmread(next(dicom_study.rglob("*.dcm")), stop_before_pixels=True)
    header.add_new(0x00091010, "LO", "private Doe^Jane")  # a private tag
    clean = deidentified_header(header)
    assert header.PatientName == "Doe^Jane"  # the source is untouched
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName"):
        assert keyword in clean and clean.data_element(keyword).value in ("", None)
    for keyword in ("OtherPatientIDs", "InstitutionName", "SeriesDescription", "StudyDescription"):
        assert keyword not in clean
    assert 0x00091010 not in clean and "PixelData" not in clean
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID",
                    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        assert clean.data_element(keyword).value == header.data_element(keyword).value


def test_a_seed_gives_the_same_uids(diagnosed, dicom_study):
    diagnosis, _, axial_slices = diagnosed
    sources = collect_dicom_sources(open_study(dicom_study))
    outputs = [build_dicom_outputs(diagnosis.prediction, diagnosis.findings, sources, axial_slices=axial_slices,
                                   identity=OutputIdentity(seed="request-0001")) for _ in range(2)]
    assert {n: d.SOPInstanceUID for n, d in outputs[0].items()} == {n: d.SOPInstanceUID for n, d in outputs[1].items()}
    other = build_dicom_outputs(diagnosis.prediction, diagnosis.findings, sources, axial_slices=axial_slices)
    assert other["sr"].SOPInstanceUID != outputs[0]["sr"].SOPInstanceUID


def test_the_cli_writes_and_prints_the_dicom_outputs(dicom_study, tiny_model_file, tmp_path, capsys):
    assert main(["diagnose", str(dicom_study), "--checkpoint", str(tiny_model_file), "--out", str(tmp_path / "out"),
                 "--dicom-out", str(tmp_path / "dicom")]) == 0
    printed = capsys.readouterr().out
    for name in ("seg_sagittal", "sr"):
        path = tmp_path / "dicom" / f"{name}.dcm"
        assert path.is_file() and f"DICOM {name}: {path}" in printed


def test_a_nifti_study_is_refused_before_the_model_runs(tiny_model_file, tmp_path, capsys):
    with pytest.raises(NotDicomError, match="need a DICOM input"):
        collect_dicom_sources(open_study(REAL_SCAN))
    assert main(["diagnose", str(REAL_SCAN), "--checkpoint", str(tiny_model_file), "--out", str(tmp_path / "out"),
                 "--dicom-out", str(tmp_path / "dicom")]) == 1
    assert "need a DICOM input" in capsys.readouterr().err
    assert not (tmp_path / "dicom").exists() and not (tmp_path / "out" / "report.txt").exists()


def test_bad_masks_and_planes_are_refused(dicom_study):
    header = deidentified_header(pydicom.dcmread(next(dicom_study.rglob("*.dcm")), stop_before_pixels=True))
    plane = PlaneGeometry.from_affine(np.eye(4), 0, 1, (0, 0, 0))
    with pytest.raises(ValueError, match="structure indices"):
        build_segmentation(np.full((4, 4), 7), plane, [header], identity=OutputIdentity(), name="x",
                           instance_number=1, content_label="X", content_description="x")
    with pytest.raises(ValueError, match="2D"):
        build_segmentation(np.zeros((2, 4, 4), int), plane, [header], identity=OutputIdentity(), name="x",
                           instance_number=1, content_label="X", content_description="x")
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(ValueError, match="not orthogonal"):
        PlaneGeometry.from_affine(sheared, 0, 1, (0, 0, 0))


def test_one_coded_segment_per_foreground_structure():
    assert STRUCTURES == tuple(s for s in Structure if s is not Structure.BACKGROUND)
    assert set(SEGMENT_TYPES) == set(SEGMENT_LABELS) == set(STRUCTURES)
    assert [segment_frame_number(s) for s in STRUCTURES] == [s.index for s in STRUCTURES] == [1, 2, 3, 4]
    assert segment_frame_number(Structure.CANAL, plane=1) == len(STRUCTURES) + Structure.CANAL.index
    # Every segment type is distinct: the body and the posterior elements are told apart in the SEG.
    types = {(SEGMENT_TYPES[s].value, SEGMENT_TYPES[s].scheme_designator) for s in STRUCTURES}
    assert len(types) == len(STRUCTURES)
    assert (SEGMENT_TYPES[Structure.POSTERIOR_ELEMENTS].value,
            SEGMENT_TYPES[Structure.POSTERIOR_ELEMENTS].scheme_designator) == ("40265002", "SCT")
    assert SEGMENT_TYPES[Structure.VERTEBRAL_BODY].scheme_designator == LSS_SCHEME
    # ... and drawn in distinct colours (the SEG's display colours are the evidence images' overlay colours).
    assert len({STRUCTURE_COLOURS[s.index] for s in STRUCTURES}) == len(STRUCTURES)
    with pytest.raises(ValueError, match="not a segmented structure"):
        segment_frame_number(Structure.BACKGROUND)
