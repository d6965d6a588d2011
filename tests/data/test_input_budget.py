"""The reading budget (``lss.config.InputLimits``, ``lss.data.io.limits``): small uploads that declare huge images are
refused from their headers, before anything of that size is allocated, with IMAGE_TOO_LARGE and a message naming the
limit and its settings key but never the file. Each attack is built at a small scale against limits scaled down to
match; the header-only ones run at full scale against the defaults. Real scans pass the defaults.

File and folder names here are patient-like ("DOE_JANE"): no message may quote them.
"""

from __future__ import annotations

import gzip
import json
import resource
import shutil
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers_io import image_volume, sagittal_axes, write_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    generate_uid,
)

from conftest import REPO_ROOT
from lss.config import InputLimits, PreprocessConfig
from lss.data.cases import read_jsonl
from lss.data.errors import ErrorCode, StudyError
from lss.data.io import list_dicom_series, read_image_geometry, read_volume, write_nifti
from lss.data.io.limits import (
    check_declared_image,
    check_inflated_size,
    check_resampled,
    resampled_shape,
)
from lss.data.manifest import SeriesRecord, StudyRecord
from lss.data.volume import Volume
from lss.inference.study_input import open_study, unpack_zip

NAME = "DOE_JANE"  # a patient-like file / folder name no message may quote
SHARED_REAL = Path("/work/shared/data/real")
MB = 1 << 20


def _refused(call, *args, **kwargs) -> StudyError:
    """The IMAGE_TOO_LARGE error ``call`` raises; its message names no file."""
    with pytest.raises(StudyError) as caught:
        call(*args, **kwargs)
    error = caught.value
    assert error.code is ErrorCode.IMAGE_TOO_LARGE, error
    assert NAME not in error.message and ".nii" not in error.message and ".dcm" not in error.message
    assert "preprocess.limits." in error.message or "MB a header" in error.message
    return error


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ------------------------------------------------------------------------------------------------ the helpers
def test_messages_name_the_limit_and_its_key():
    error = _refused(check_declared_image, (1024, 1024, 1024), 1, None)
    assert error.message == ("the image declares 1,073,741,824 voxels, more than preprocess.limits.max_voxels "
                             "(67,108,864).")
    small = InputLimits(max_voxels=10**9, max_decoded_mb=1, max_matrix=64, max_frames=8)
    assert "max_decoded_mb (1 MB)" in _refused(check_declared_image, (32, 32, 600), 4, small).message
    assert "max_matrix (64)" in _refused(check_declared_image, (65, 10, 4), 1, small).message
    assert "max_frames (8)" in _refused(check_declared_image, (64, 64, 9), 1, small).message
    check_declared_image((64, 64, 8), 1, small)  # exactly at every limit: accepted
    check_declared_image((512, 512, 256), 2, None)  # the defaults admit a 512 x 512 x 256 int16 series


def test_resampled_shape_is_what_spacingd_makes():
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientationd, Spacingd

    from lss.preprocessing.transforms import RAS_LABELS

    rng = np.random.default_rng(0)
    for trial in range(6):
        shape = tuple(int(n) for n in rng.integers(3, 20, 3))
        axes = sagittal_axes() if trial % 2 else np.eye(3)[rng.permutation(3)]
        affine = np.eye(4)
        angle = np.deg2rad(rng.uniform(-30, 30))
        tilt = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
        affine[:3, :3] = tilt @ axes.T @ np.diag(rng.uniform(0.5, 6.0, 3))
        for target in ((3.5, 1.25, 1.25), (0.9, 0.9, None)):
            data = {"image": MetaTensor(torch.zeros((1, *shape)), affine=torch.as_tensor(affine))}
            data = Orientationd(keys=["image"], axcodes="RAS", labels=RAS_LABELS)(data)
            pixdim = tuple(-1.0 if t is None else t for t in target)
            data = Spacingd(keys=["image"], pixdim=pixdim)(data)
            assert resampled_shape(shape, affine, target) == tuple(data["image"].shape[1:]), (trial, target)


def test_inflate_is_capped_and_damaged_streams_are_truncated():
    limits = InputLimits(max_decoded_mb=1)
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = raw.compress(bytes(64 * MB)) + raw.flush()  # 64 MB of zeros in ~64 KB
    tracemalloc.start()
    try:
        _refused(check_inflated_size, _stream(bomb), limits, "file 1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MB // 2, peak  # a chunk at a time, never the 64 MB (nor the 1 MB limit)
    small = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = small.compress(bytes(MB)) + small.flush()
    assert check_inflated_size(_stream(data + b"trailing"), limits, "file 1") == MB  # exactly at the limit
    for damaged in (data[: len(data) // 2], b"\xff" * 64):
        with pytest.raises(StudyError) as caught:
            check_inflated_size(_stream(damaged), limits, "file 1")
        assert caught.value.code is ErrorCode.TRUNCATED


def _stream(data: bytes):
    import io

    return io.BytesIO(data)


# ------------------------------------------------------------------------------------------------ NIfTI
def _nifti_header_only(path: Path, shape, dtype=np.uint8, vox_offset: float | None = None,
                       extensions: bytes = b"") -> Path:
    """A .nii.gz of a header (and ``extensions``), with no voxel data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_xyzt_units(xyz="mm")
    header.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code="scanner")
    header["vox_offset"] = vox_offset if vox_offset is not None else 352 + len(extensions)
    raw = header.binaryblock + (b"\x01\x00\x00\x00" if extensions else b"\x00\x00\x00\x00") + extensions
    path.write_bytes(gzip.compress(raw))
    return path


def test_header_only_nifti_of_1024_cubed_is_refused_at_once_without_allocating(tmp_path):
    path = _nifti_header_only(tmp_path / f"{NAME}.nii.gz", (1024, 1024, 1024))
    read_volume(_small_nifti(tmp_path / "warm.nii.gz"))  # imports and caches warm
    assert path.stat().st_size < 1024
    rss = _rss_mb()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        error = _refused(read_volume, path)  # default limits
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "1,073,741,824 voxels" in error.message and "max_voxels" in error.message
    assert seconds < 0.5, seconds
    assert peak < 200 * MB and _rss_mb() - rss < 200, (peak, _rss_mb() - rss)
    _refused(read_image_geometry, path)  # the header-only reader checks too


def _small_nifti(path: Path, shape=(6, 40, 40), zooms=(4.0, 0.8, 0.8)) -> Path:
    data = (np.random.default_rng(0).random(shape) * 100).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), path)
    return path


def test_nifti_limits_scale_down(tmp_path):
    path = _small_nifti(tmp_path / f"{NAME}.nii.gz", shape=(30, 30, 30), zooms=(1.0, 1.0, 1.0))
    assert read_volume(path).shape == (30, 30, 30)
    assert "27,000 voxels" in _refused(read_volume, path, limits=InputLimits(max_voxels=10_000)).message
    assert "max_matrix" in _refused(read_volume, path, limits=InputLimits(max_matrix=29)).message
    assert "max_frames" in _refused(read_volume, path, limits=InputLimits(max_frames=29)).message


def test_nifti_vox_offset_and_extensions_cannot_inflate(tmp_path):
    # vox_offset far into a .nii.gz: nibabel would inflate (and skip) that much before the voxels.
    far = _nifti_header_only(tmp_path / f"{NAME}_far.nii.gz", (8, 8, 8), vox_offset=2.0e9)
    assert "vox_offset" in _refused(read_volume, far).message
    # One extension declaring 1 GB between a header and a vox_offset 32 bytes further: nibabel would read it whole.
    ext = np.array([1 << 30, 6], dtype="<i4").tobytes() + bytes(24)
    huge = _nifti_header_only(tmp_path / f"{NAME}_ext.nii.gz", (8, 8, 8), extensions=ext)
    tracemalloc.start()
    try:
        with pytest.raises(StudyError) as caught:
            read_volume(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.code is ErrorCode.NOT_AN_IMAGE and NAME not in caught.value.message
    assert peak < 10 * MB, peak
    # Extensions but a vox_offset before them: nibabel would read extensions to the end of the file.
    early = _nifti_header_only(tmp_path / f"{NAME}_early.nii.gz", (8, 8, 8), vox_offset=0.0, extensions=ext)
    with pytest.raises(StudyError) as caught:
        read_volume(early)
    assert caught.value.code is ErrorCode.NOT_AN_IMAGE
    # A real (small) extension still reads.
    image = nib.Nifti1Image(np.ones((8, 8, 8), dtype=np.int16), np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"a note" * 100))
    nib.save(image, tmp_path / "with_extension.nii.gz")
    assert read_volume(tmp_path / "with_extension.nii.gz").shape == (8, 8, 8)


def test_unreadable_nifti_messages_do_not_name_the_file(tmp_path):
    path = tmp_path / f"{NAME}.nii.gz"
    path.write_bytes(b"\x1f\x8b not a NIfTI file")
    with pytest.raises(StudyError) as caught:
        read_volume(path)
    assert NAME not in caught.value.message and caught.value.path == str(path)  # the path stays for local logs


# ------------------------------------------------------------------------------------------------ resampling
def test_coarse_voxels_are_refused_before_resampling(tmp_path):
    """A 12 x 192 x 192 NIfTI of 12 mm voxels (inside the spacing limits) is small to read and GBs on the model's
    grid: preprocessing refuses it before Spacingd runs."""
    from lss.preprocessing.transforms import preprocess_study

    path = tmp_path / f"{NAME}.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 192, 192), dtype=np.uint8), np.diag([12.0, 12.0, 12.0, 1.0])), path)
    assert path.stat().st_size < 400_000
    volume = read_volume(path)  # reading is cheap: 442,368 voxels
    config = PreprocessConfig()
    _refused(check_resampled, volume.shape, volume.affine, config.sagittal_spacing_mm, config.limits, "the image")
    record = StudyRecord(study_id=NAME, source="nifti", series=[
        SeriesRecord(series_id=NAME, view="sagittal", path=str(path), format="nifti")])
    rss = _rss_mb()
    started = time.perf_counter()
    error = _refused(preprocess_study, record, config)
    assert time.perf_counter() - started < 5.0 and _rss_mb() - rss < 200
    assert "max_resampled_voxels" in error.message and "sagittal series" in error.message


def test_an_axial_slab_is_checked_at_the_in_plane_grid(tmp_path):
    from lss.preprocessing.transforms import preprocess_study

    sagittal = _small_nifti(tmp_path / "sag.nii.gz")  # resamples to 7 x 26 x 26
    axial = tmp_path / f"{NAME}_ax.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((64, 64, 5), dtype=np.float32), np.diag([3.0, 3.0, 4.0, 1.0])), axial)
    record = StudyRecord(study_id="s", source="nifti", series=[
        SeriesRecord(series_id="sag", view="sagittal", path=str(sagittal), format="nifti"),
        SeriesRecord(series_id=NAME, view="axial", path=str(axial), format="nifti", level="L4/L5")])
    # A slab of 3 slices at 0.9 mm in plane: 211 x 211 x 3 = 133,563 voxels.
    config = PreprocessConfig(limits=InputLimits(max_resampled_voxels=100_000))
    error = _refused(preprocess_study, record, config)
    assert "axial series 1" in error.message and "133,563 voxels" in error.message
    case = preprocess_study(record, PreprocessConfig(limits=InputLimits(max_resampled_voxels=200_000)))
    assert case.axial_present.sum() == 1


def test_a_thin_single_slice_is_checked_before_it_is_tiled(tmp_path):
    """A one-slice sagittal volume (labelled training data) is copied enough times to fill the crop: at 0.1 mm
    thickness that is 422 copies, counted against the budget before they are made."""
    from lss.preprocessing.transforms import preprocess_study

    affine = np.diag([0.1, 1.0, 1.0, 1.0])
    image, mask = tmp_path / f"{NAME}.nii.gz", tmp_path / f"{NAME}_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((1, 64, 64), dtype=np.float32), affine), image)
    labels = np.zeros((1, 64, 64), dtype=np.int16)
    labels[0, 20:40, 20:40] = 1
    nib.save(nib.Nifti1Image(labels, affine), mask)
    record = StudyRecord(study_id="s", source="nifti", series=[
        SeriesRecord(series_id="s", view="sagittal", path=str(image), format="nifti", mask_path=str(mask))])
    error = _refused(preprocess_study, record, PreprocessConfig(limits=InputLimits(max_voxels=1_000_000)))
    assert "tiled" in error.message and "1,728,512 voxels" in error.message
    assert preprocess_study(record, PreprocessConfig()).info["single_slice"]


# ------------------------------------------------------------------------------------------------ MetaImage / NRRD
def _metaimage_bomb(path: Path, dims=(1024, 1024, 1024)) -> Path:
    data = zlib.compress(bytes(MB), 9)
    header = "\n".join([
        "ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
        "CompressedData = True", f"CompressedDataSize = {len(data)}", "TransformMatrix = 1 0 0 0 1 0 0 0 1",
        "Offset = 0 0 0", "ElementSpacing = 1 1 1", f"DimSize = {' '.join(str(n) for n in dims)}",
        "ElementType = MET_UCHAR", "ElementDataFile = LOCAL", ""])
    path.write_bytes(header.encode() + data)
    return path


def _nrrd_bomb(path: Path, dims=(1024, 1024, 1024)) -> Path:
    header = "\n".join(["NRRD0004", "type: uint8", "dimension: 3", f"sizes: {' '.join(str(n) for n in dims)}",
                        "space: left-posterior-superior", "space directions: (1,0,0) (0,1,0) (0,0,1)",
                        "space origin: (0,0,0)", "encoding: gzip", "", ""])
    path.write_bytes(header.encode() + gzip.compress(bytes(MB)))
    return path


@pytest.mark.parametrize("make", [_metaimage_bomb, _nrrd_bomb], ids=["mha", "nrrd"])
def test_metaimage_and_nrrd_declaring_huge_sizes_are_refused_before_execute(tmp_path, make):
    suffix = ".mha" if make is _metaimage_bomb else ".nrrd"
    small = make(tmp_path / f"small{suffix}", dims=(64, 64, 16))
    assert read_volume(small).shape == (64, 64, 16)  # SimpleITK loaded: its import is not counted below
    _refused(read_volume, small, limits=InputLimits(max_voxels=10_000))
    path = make(tmp_path / f"{NAME}{suffix}")
    assert path.stat().st_size < 10_000
    rss = _rss_mb()
    started = time.perf_counter()
    error = _refused(read_volume, path)
    assert time.perf_counter() - started < 0.5 and _rss_mb() - rss < 200
    assert "1,073,741,824 voxels" in error.message
    _refused(read_image_geometry, path)


# ------------------------------------------------------------------------------------------------ DICOM
def _slice(path: Path, rows: int, columns: int, number: int, series_uid: str, study_uid: str, *,
           syntax=ExplicitVRLittleEndian, description: str = "Sag T2", modality: str = "MR") -> Path:
    """One sagittal MR slice of zero pixels in the given transfer syntax (deflated: the dataset is deflated whole;
    JPEG: a few bytes that are no JPEG, which only a decoder would notice)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.SeriesDescription = modality, "DOE^JANE", description
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study_uid, series_uid, number
    ds.Rows, ds.Columns = rows, columns
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.ImagePositionPatient = [3.0 * number, 0.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 3.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    if syntax == JPEGBaseline8Bit:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG \xff\xd9\x00"])
        ds["PixelData"].VR = "OB"
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelData = bytes(rows * columns * 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _series(folder: Path, count: int, rows: int, columns: int, **kwargs) -> list[Path]:
    """``count`` slices: the first written, the others copies of it (the budget is refused before positions,
    UIDs or pixels are looked at, so identical copies do)."""
    first = _slice(folder / f"{NAME}_1.dcm", rows, columns, 1, generate_uid(), generate_uid(), **kwargs)
    files = [first]
    for number in range(2, count + 1):
        files.append(folder / f"{NAME}_{number}.dcm")
        shutil.copy(first, files[-1])
    return files


def _no_pixels_read(monkeypatch) -> None:
    """Fails the test if the DICOM reader reads (let alone decodes) pixel data."""
    import lss.data.io.dicom.reading as reading

    def forbidden(*args, **kwargs):
        raise AssertionError("pixel data was read before the budget was checked")

    monkeypatch.setattr(reading, "_read_slices", forbidden)
    monkeypatch.setattr(reading, "_slice_pixels", forbidden)


def test_deflated_dicom_file_is_refused_before_pydicom_inflates_it(tmp_path, monkeypatch):
    """One deflated file inflating past max_decoded_mb: pydicom would inflate all of it in one go, even for the
    header; the capped inflate stops at the limit and pydicom never inflates it."""
    import pydicom.filereader

    path = _slice(tmp_path / "study" / f"{NAME}.dcm", 1024, 1024, 1, generate_uid(), generate_uid(),
                  syntax=DeflatedExplicitVRLittleEndian)  # 2 MB once inflated, a few KB on disk
    assert path.stat().st_size < 20_000
    calls = []
    real = pydicom.filereader.zlib.decompress
    monkeypatch.setattr(pydicom.filereader.zlib, "decompress", lambda *a, **k: calls.append(1) or real(*a, **k))
    limits = InputLimits(max_decoded_mb=1)
    tracemalloc.start()
    try:
        error = _refused(list_dicom_series, tmp_path / "study", limits=limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert calls == [] and peak < MB, peak  # pydicom inflated nothing; the capped inflate held far below 1 MB
    assert "deflated DICOM" in error.message and "max_decoded_mb" in error.message
    _refused(read_volume, tmp_path / "study", limits=limits)
    assert read_volume(tmp_path / "study").shape == (1024, 1024, 1)  # within the default budget it reads


def test_deflated_dicom_zip_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    """The attack at full scale: a ~30 KB zip of 14 deflated 4096 x 4096 slices (470 MB once inflated; decoding
    them took 48 s and 7.6 GB). Each file's inflate is capped, and the first file over the budget refuses the
    study at the listing; with a matrix limit that lets each file through, the series is refused from its headers."""
    files = _series(tmp_path / "src" / NAME, 14, 4096, 4096, syntax=DeflatedExplicitVRLittleEndian)
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, f"{NAME}/{path.name}")
    assert archive.stat().st_size < 100_000
    root = unpack_zip(archive, tmp_path / "unpacked")
    assert sum(p.stat().st_size for p in root.rglob("*.dcm")) < 1 * MB
    _no_pixels_read(monkeypatch)
    rss = _rss_mb()
    started = time.perf_counter()
    error = _refused(open_study, root)  # its first file inflates (capped) to 32 MB, then is refused
    assert time.perf_counter() - started < 5 and _rss_mb() - rss < 200
    assert "file 1 has an in-plane side of 4,096 pixels" in error.message
    wide = InputLimits(max_matrix=4096)
    record = open_study(root, limits=wide)  # each header inflated capped (32 MB each: under max_decoded_mb)
    assert record.sagittal() is not None
    started = time.perf_counter()
    error = _refused(read_volume, root / NAME, limits=wide)
    assert time.perf_counter() - started < 10 and _rss_mb() - rss < 500
    assert "234,881,024 voxels" in error.message and "the series" in error.message
    # Scaled down: a per-file inflate cap below one file refuses it at the listing already.
    _refused(open_study, root, limits=InputLimits(max_decoded_mb=16))


def test_many_deflated_files_are_refused_once_they_inflate_past_the_listing_budget(tmp_path, monkeypatch):
    """Each file under max_decoded_mb, but listing must inflate them all (their headers are inside the deflate
    stream): the folder's inflate budget stops the listing, in time bounded by that budget, not by the file count."""
    folder = tmp_path / "study"
    _series(folder, 12, 1024, 1024, syntax=DeflatedExplicitVRLittleEndian)  # 2 MB each once inflated
    _no_pixels_read(monkeypatch)
    assert len(list_dicom_series(folder)[0].files) == 12  # 24 MB: within the default budget
    error = _refused(list_dicom_series, folder, limits=InputLimits(max_listing_inflated_mb=9))
    assert "max_listing_inflated_mb (9 MB)" in error.message
    _refused(open_study, folder, limits=InputLimits(max_listing_inflated_mb=9))


def test_jpeg_compressed_dicom_is_refused_from_its_header(tmp_path, monkeypatch):
    folder = tmp_path / NAME
    _series(folder, 3, 4096, 4096, syntax=JPEGBaseline8Bit)
    assert sum(p.stat().st_size for p in folder.iterdir()) < 10_000
    _no_pixels_read(monkeypatch)
    error = _refused(read_volume, folder)  # 3 x 4096 x 4096 = 50 M voxels, under max_voxels; the matrix is not
    assert "max_matrix (2,048)" in error.message


def test_dicom_series_limits_scale_down(tmp_path, monkeypatch):
    files = write_series(image_volume(sagittal_axes(), shape=(16, 12, 6)), tmp_path / NAME, patient_name="DOE^JANE")
    assert read_volume(files[0].parent).shape == (16, 12, 6)
    _no_pixels_read(monkeypatch)
    for limits, key in ((InputLimits(max_voxels=1000), "max_voxels"), (InputLimits(max_matrix=15), "max_matrix"),
                        (InputLimits(max_frames=5), "max_frames")):
        assert key in _refused(read_volume, files[0].parent, limits=limits).message
    error = _refused(read_volume, files[0].parent, stack=0, limits=InputLimits(max_voxels=1000))
    assert error.message.startswith("stack 0 of the series")

    from lss.preprocessing.transforms import preprocess_study

    record = StudyRecord(study_id=NAME, source="dicom", series=[
        SeriesRecord(series_id="s1", view="sagittal", path=str(files[0].parent), format="dicom")])
    error = _refused(preprocess_study, record, PreprocessConfig(limits=InputLimits(max_voxels=1000)))
    assert error.message.startswith("sagittal series: the series declares 1,152 voxels")


def test_dicom_messages_quote_no_names_and_no_text_values(tmp_path):
    # Two series whose descriptions hold a name: the message counts them, it does not describe them.
    folder = tmp_path / NAME
    _slice(folder / "a.dcm", 8, 8, 1, generate_uid(), generate_uid(), description="DOE^JANE sag")
    _slice(folder / "b.dcm", 8, 8, 1, generate_uid(), generate_uid(), description="DOE^JANE ax")
    with pytest.raises(StudyError) as caught:
        read_volume(folder)
    assert "2 DICOM series" in caught.value.message and "DOE" not in caught.value.message
    # A free-text Modality is not quoted; a defined term is.
    other = tmp_path / "other"
    _slice(other / f"{NAME}.dcm", 8, 8, 1, generate_uid(), generate_uid(), modality="DOE_JANE")
    with pytest.raises(StudyError) as caught:
        read_volume(other)
    assert caught.value.code is ErrorCode.WRONG_MODALITY and "DOE" not in caught.value.message
    # A damaged file is named by its number.
    damaged = tmp_path / "damaged"
    files = write_series(image_volume(sagittal_axes()), damaged / NAME)
    files[2].write_bytes(files[2].read_bytes()[:400])
    with pytest.raises(StudyError) as caught:
        read_volume(damaged / NAME)
    assert NAME not in caught.value.message and "file 3" in caught.value.message


# ------------------------------------------------------------------------------------------------ real scans
def _real_scans() -> list[Path]:
    roots = [SHARED_REAL, REPO_ROOT / "data" / "real"]
    found = {}
    for root in roots:
        for pattern in ("fastcleverseg_vb2/*_t2.nii.gz", "sct_t2_lumbar/t2_lumbar.nii.gz"):
            for path in sorted(root.glob(pattern)):
                found.setdefault(path.relative_to(root), path)
    return list(found.values())


def test_every_real_scan_passes_the_default_limits():
    scans = _real_scans()
    if not scans:
        pytest.skip("no real scans here (shared/data/real)")
    config = PreprocessConfig()
    for path in scans:
        volume = read_volume(path)  # the public reader, default limits
        out = check_resampled(volume.shape, volume.affine, config.sagittal_spacing_mm, config.limits, "the scan")
        # With a wide margin: a tenth of each limit.
        assert np.prod(volume.shape) < config.limits.max_voxels / 10, path.name
        assert np.prod(out) < config.limits.max_resampled_voxels / 10, path.name
        assert max(volume.shape) < config.limits.max_matrix / 2, path.name


# ------------------------------------------------------------------------------------------------ studies and batches
def test_open_study_refuses_a_huge_upload_and_names_no_study(tmp_path):
    (tmp_path / "upload").mkdir()
    _nifti_header_only(tmp_path / "upload" / f"{NAME}.nii.gz", (1024, 1024, 1024))
    error = _refused(open_study, tmp_path / "upload")
    assert error.path is None  # as Serve answers it: code and message only
    for name in (NAME, "ROE_RICHARD"):
        _small_nifti(tmp_path / "several" / name / "sag.nii.gz")
    with pytest.raises(StudyError) as caught:
        open_study(tmp_path / "several")
    assert caught.value.code is ErrorCode.MULTIPLE_STUDIES
    assert NAME not in caught.value.message and "ROE" not in caught.value.message


def test_a_study_over_budget_is_reported_and_the_batch_goes_on(tmp_path):
    from lss.preprocessing.pipeline import run_preprocessing

    data = tmp_path / "data"
    _small_nifti(data / "ROE_RICHARD" / "sag.nii.gz")
    big = data / NAME / f"{NAME}_t2.nii.gz"
    big.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((12, 192, 192), dtype=np.uint8), np.diag([12.0, 12.0, 12.0, 1.0])), big)
    huge = data / "SMITH_JOHN" / "SMITH_JOHN.nii.gz"
    huge.parent.mkdir(parents=True)
    _nifti_header_only(huge, (1024, 1024, 1024))
    summary = run_preprocessing(data, tmp_path / "pre", PreprocessConfig(), engine="serial")
    ok = read_jsonl(tmp_path / "pre" / "preprocessed.jsonl")
    rows = read_jsonl(tmp_path / "pre" / "errors.jsonl")
    codes = {(row["study_id"], row["stage"], row["code"]) for row in rows}
    assert [row["study_id"] for row in ok] == ["ROE_RICHARD"] and summary.ok == 1
    assert {(NAME, "preprocess", "image_too_large")} == {c for c in codes if c[0] == NAME}
    assert "max_resampled_voxels" in next(row["message"] for row in rows if row["study_id"] == NAME)
    # Refused at discovery (its header), with the code; the study, left without a series, is reported too.
    assert {c for c in codes if c[0] == "SMITH_JOHN"} == {("SMITH_JOHN", "discover", "image_too_large"),
                                                         ("SMITH_JOHN", "discover", "missing_sagittal")}
    for row in rows:
        assert NAME not in row["message"] and "SMITH" not in row["message"], json.dumps(row)


def test_diagnose_folder_reports_an_over_budget_study_and_goes_on(tmp_path):
    """``lss diagnose DIR``: each study goes through ``open_study`` and the preparer (stage 1 of
    ``Diagnoser.diagnose_path``, where the budget applies); a study over it fails with its code, the next one runs.
    The model stages are stubbed out: the study that passes stage 1 gets empty findings."""
    import tempfile
    from types import SimpleNamespace

    from lss.inference.batch import diagnose_folder
    from lss.inference.prepare import StudyPreparer

    class StageOne:
        def __init__(self) -> None:
            self.preparer = StudyPreparer(PreprocessConfig(), find_discs=lambda prepared: {})

        def diagnose_path(self, path, out_dir, max_unpacked_bytes=1 << 30, dicom_out=None):
            with tempfile.TemporaryDirectory() as workdir:
                self.preparer(open_study(path, workdir, max_unpacked_bytes))
            return SimpleNamespace(findings=SimpleNamespace(levels=[]))

    data = tmp_path / "incoming"
    _small_nifti(data / "ROE_RICHARD" / "sag.nii.gz")
    big = data / NAME / f"{NAME}_t2.nii.gz"
    big.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((12, 192, 192), dtype=np.uint8), np.diag([12.0, 12.0, 12.0, 1.0])), big)
    summary = diagnose_folder(StageOne(), data, tmp_path / "out")
    outcomes = {s.study_id: s for s in summary.studies}
    assert outcomes["ROE_RICHARD"].status == "ok"
    assert (outcomes[NAME].status, outcomes[NAME].error_code) == ("failed", "image_too_large")
    assert NAME not in outcomes[NAME].error_message and "max_resampled_voxels" in outcomes[NAME].error_message


def test_limits_raised_in_the_config_reach_discovery_and_preprocessing(tmp_path):
    from lss.preprocessing.pipeline import run_preprocessing

    data = tmp_path / "data"
    _small_nifti(data / NAME / "sag.nii.gz", shape=(6, 40, 40))
    tight = PreprocessConfig(limits=InputLimits(max_voxels=1000))
    summary = run_preprocessing(data, tmp_path / "tight", tight, engine="serial")
    assert summary.ok == 0 and [e["code"] for e in summary.errors] == ["image_too_large", "missing_sagittal"]
    # The resampled check alone (the image reads within max_voxels): preprocessing refuses it.
    resampled = PreprocessConfig(limits=InputLimits(max_resampled_voxels=1000))
    summary = run_preprocessing(data, tmp_path / "resampled", resampled, engine="serial")
    assert summary.ok == 0 and summary.errors[0]["code"] == "image_too_large"
    assert summary.errors[0]["stage"] == "preprocess"
    assert run_preprocessing(data, tmp_path / "default", PreprocessConfig(), engine="serial").ok == 1


def test_written_volumes_round_trip_within_the_budget(tmp_path):
    volume = Volume(np.ones((64, 64, 20), dtype=np.int16), np.diag([0.8, 0.8, 3.0, 1.0]))
    path = write_nifti(volume, tmp_path / f"{NAME}.nii.gz")
    assert read_volume(path, limits=InputLimits(max_voxels=64 * 64 * 20)).shape == (64, 64, 20)
    _refused(read_volume, path, limits=InputLimits(max_voxels=64 * 64 * 20 - 1))
