"""Our DICOM reader against SimpleITK (ITK/GDCM) on the DICOM files bundled with pydicom.

An independent check of the geometry and pixels of ``read_dicom_series``: same voxel values, same 4x4 affine
(SimpleITK's LPS origin / direction / spacing turned into our RAS affine), on files we did not write. Each file is
copied into ``tmp_path`` first. Only files pydicom ships in its package are used (``download=False``); a case whose
file is missing offline is skipped with its name, and ``test_the_bundled_cases_are_present`` fails if the cases
that must run (one single file, one multi-slice series) are gone.

pydicom bundles one regularly spaced multi-slice series, and it is CT (``dicomdirtests/98892001/CT5N``); our reader
accepts MR only, so the CT files used (that series, the scouts ``CT2N``, ``CT_small.dcm``) are read from copies
relabelled ``Modality = "MR"``, with geometry and pixels untouched and SimpleITK reading the same copies.

Where the readers differ, by design:

- One slice has no slice step. Both use SpacingBetweenSlices when the file has it; without it ITK/GDCM takes 1 mm
  and we take SliceThickness (``MR_small.dcm``: 0.8 mm against ITK's 1.0). So for a single slice the k column is
  compared in direction, and its length against the header.
- A series with a gap (``dicomdirtests/77654033/CT2``: slices at -99.48, 103.02, 104.27, 105.52 mm): we raise
  MISSING_SLICES; SimpleITK warns and returns a volume with one mean spacing (68.3 mm) that puts the middle slices
  in the wrong place.
- ``MR_truncated.dcm``: we raise TRUNCATED; SimpleITK cannot read it at all.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from lss.data.errors import ErrorCode, StudyError
from lss.data.io import list_dicom_series, read_dicom_series
from lss.data.volume import LPS_TO_RAS, Volume

# (bundled file name, relabel as MR): one slice each, every transfer syntax pydicom bundles MR_small in.
SINGLE_FILES = [
    ("MR_small.dcm", False),
    ("MR_small_implicit.dcm", False),
    ("MR_small_bigendian.dcm", False),
    ("MR_small_expb.dcm", False),
    ("MR_small_padded.dcm", False),
    ("MR_small_RLE.dcm", False),
    ("MR_small_jpeg_ls_lossless.dcm", False),
    ("MR_small_jp2klossless.dcm", False),
    ("CT_small.dcm", True),  # has SpacingBetweenSlices and RescaleIntercept -1024
]
# (one file of the series, relabel as MR, number of slices): the whole series is read.
MULTI_SLICE = [("dicomdirtests/98892001/CT5N/2062", True, 5)]
# (one file of the series, relabel as MR, number of stacks): series of single-slice stacks of different
# orientations (3-plane localisers, a radial set, two CT scouts with PixelSpacing 0.545 x 0.597, the only bundled
# slices with unequal row and column spacing); each stack is compared with SimpleITK reading its file.
STACKED = [
    ("dicomdirtests/98892003/MR2/4950", False, 3),
    ("dicomdirtests/98892003/MR2/6273", False, 3),
    ("dicomdirtests/98892003/MR700/4467", False, 7),
    ("dicomdirtests/98892001/CT2N/6293", True, 2),
]


def _bundled(name: str) -> Path:
    """The bundled file, or a skip naming it when this pydicom install lacks it offline."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not bundled with pydicom {pydicom.__version__} (nothing is downloaded here).")
    return Path(path)


def _copy(sources: list[Path], folder: Path, relabel: bool) -> list[Path]:
    """Copies files into ``folder``; with ``relabel`` the copies say Modality MR (nothing else changes)."""
    folder.mkdir(parents=True)
    copies = []
    for source in sources:
        target = folder / source.name
        if relabel:
            ds = pydicom.dcmread(source)
            ds.Modality = "MR"
            ds.save_as(target)
        else:
            shutil.copy(source, target)
        copies.append(target)
    return copies


def _sitk_volume(image: sitk.Image) -> Volume:
    """A SimpleITK image in our layout: array[i=column, j=row, k=slice] and a RAS affine."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * np.array(image.GetSpacing())
    affine_lps[:3, 3] = image.GetOrigin()
    array = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
    return Volume(array, LPS_TO_RAS @ affine_lps)


def _sitk_series(folder: Path, series_uid: str) -> Volume:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series_uid))
    return _sitk_volume(reader.Execute())


def _assert_same_pixels(ours: Volume, theirs: Volume) -> None:
    assert ours.shape == theirs.shape
    assert np.any(ours.array != ours.array.flat[0]), "a constant image would not show a transposition"
    np.testing.assert_array_equal(ours.array, theirs.array.astype(np.float32))


def _assert_same_single_slice_geometry(ours: Volume, theirs: Volume, header: pydicom.Dataset) -> None:
    """In-plane axes and origin as SimpleITK; the k column along its normal, as long as our rule says."""
    np.testing.assert_allclose(ours.affine[:, [0, 1, 3]], theirs.affine[:, [0, 1, 3]], atol=1e-6)
    ours_k, theirs_k = ours.affine[:3, 2], theirs.affine[:3, 2]
    np.testing.assert_allclose(ours_k / np.linalg.norm(ours_k), theirs_k / np.linalg.norm(theirs_k), atol=1e-6)
    between = header.get("SpacingBetweenSlices")
    if between:
        np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-6)  # both use it
    expected = float(between) if between else float(header.SliceThickness)
    assert np.linalg.norm(ours_k) == pytest.approx(expected)
    assert ours.meta["slice_spacing"] == pytest.approx(expected)


def test_the_bundled_cases_are_present() -> None:
    """The guard against an idle file: the single-file and multi-slice cases that must run are bundled."""
    assert get_testdata_file(SINGLE_FILES[0][0], download=False) is not None
    if get_testdata_file("dicomdirtests/DICOMDIR", download=False) is not None:
        assert get_testdata_file(MULTI_SLICE[0][0], download=False) is not None


# MR_small_padded.dcm carries 128 bytes of pixel-data padding on purpose; pydicom says so as it drops them.
@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding:UserWarning")
@pytest.mark.parametrize("name, relabel", SINGLE_FILES, ids=[case[0] for case in SINGLE_FILES])
def test_single_file_matches_simpleitk(tmp_path: Path, name: str, relabel: bool) -> None:
    (path,) = _copy([_bundled(name)], tmp_path / "series", relabel)
    ours = read_dicom_series(tmp_path / "series")
    theirs = _sitk_volume(sitk.ReadImage(str(path)))
    _assert_same_pixels(ours, theirs)
    _assert_same_single_slice_geometry(ours, theirs, pydicom.dcmread(path, stop_before_pixels=True))
    assert ours.meta["n_slices"] == 1


@pytest.mark.parametrize("name, relabel, n_slices", MULTI_SLICE, ids=[case[0] for case in MULTI_SLICE])
def test_series_matches_simpleitk(tmp_path: Path, name: str, relabel: bool, n_slices: int) -> None:
    sources = sorted(p for p in _bundled(name).parent.iterdir() if p.is_file())
    _copy(sources, tmp_path / "series", relabel)
    (info,) = list_dicom_series(tmp_path / "series")
    ours = read_dicom_series(tmp_path / "series")
    theirs = _sitk_series(tmp_path / "series", info.series_uid)
    assert ours.shape[2] == n_slices
    _assert_same_pixels(ours, theirs)
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-6)
    if relabel:  # the relabelling is what lets our reader in: the bundled files themselves are refused
        with pytest.raises(StudyError) as caught:
            read_dicom_series(_copy(sources, tmp_path / "as_bundled", relabel=False))
        assert caught.value.code == ErrorCode.WRONG_MODALITY


@pytest.mark.parametrize("name, relabel, n_stacks", STACKED, ids=[case[0] for case in STACKED])
def test_each_stack_matches_simpleitk(tmp_path: Path, name: str, relabel: bool, n_stacks: int) -> None:
    source = _bundled(name)
    _copy(sorted(p for p in source.parent.iterdir() if p.is_file()), tmp_path / "series", relabel)
    series_uid = str(pydicom.dcmread(source, stop_before_pixels=True).SeriesInstanceUID)
    (info,) = [s for s in list_dicom_series(tmp_path / "series") if s.series_uid == series_uid]
    assert info.n_stacks == n_stacks
    for stack in info.stacks:
        (path,) = stack.files
        ours = read_dicom_series(tmp_path / "series", series_uid, stack=stack.index)
        image = sitk.ReadImage(str(path))
        theirs = _sitk_volume(image)
        _assert_same_pixels(ours, theirs)
        _assert_same_single_slice_geometry(ours, theirs, pydicom.dcmread(path, stop_before_pixels=True))
        # The stack centre (which orders stacks cranial first) is SimpleITK's centre pixel, in RAS.
        centre = [(n - 1) / 2 for n in image.GetSize()[:2]] + [0.0]
        centre_ras = LPS_TO_RAS[:3, :3] @ np.array(image.TransformContinuousIndexToPhysicalPoint(centre))
        np.testing.assert_allclose(stack.centre_ras, centre_ras, atol=1e-4)
    assert [s.centre_ras[2] for s in info.stacks] == sorted((s.centre_ras[2] for s in info.stacks), reverse=True)


def test_a_gap_is_refused_where_simpleitk_spreads_the_slices(tmp_path: Path) -> None:
    sources = sorted(p for p in _bundled("dicomdirtests/77654033/CT2/17106").parent.iterdir() if p.is_file())
    _copy(sources, tmp_path / "series", relabel=True)
    with pytest.raises(StudyError) as caught:
        read_dicom_series(tmp_path / "series")
    assert caught.value.code == ErrorCode.MISSING_SLICES
    # SimpleITK reads it with one spacing, so its k axis misses the slice positions (S in RAS = z in LPS).
    (info,) = list_dicom_series(tmp_path / "series")
    theirs = _sitk_series(tmp_path / "series", info.series_uid)
    positions = sorted(float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in sources)
    placed = [float((theirs.affine @ [0, 0, k, 1])[2]) for k in range(len(positions))]
    assert theirs.shape[2] == len(positions) and max(abs(np.subtract(placed, positions))) > 50.0


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    (path,) = _copy([_bundled("MR_truncated.dcm")], tmp_path / "series", relabel=False)
    with pytest.raises(StudyError) as caught:
        read_dicom_series(tmp_path / "series")
    assert caught.value.code == ErrorCode.TRUNCATED
    with pytest.raises(RuntimeError):
        sitk.ReadImage(str(path))
