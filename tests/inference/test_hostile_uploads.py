"""Uploads built to break the reader get a coded ``StudyError`` (a 4xx in Serve), never an unhandled exception, and
their messages name entries by number, never by the client's names (which can hold patient names)."""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lss.data.errors import ErrorCode, StudyError
from lss.inference.study_input import open_study, unpack_zip

NAME = "Smith^John_MRN-67890"


def _zip(tmp_path: Path, entries: list[tuple[str, bytes]]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    path = tmp_path / "upload.zip"
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize("entries", [
    [(NAME + "x" * 300 + ".dcm", b"DICM")],                          # a name longer than the file system allows
    [(NAME, b"a file"), (f"{NAME}/b.dcm", b"DICM")],                 # a file, then a folder of the same name
    [(f"{NAME}/b.dcm", b"DICM"), (NAME, b"a file")],                 # a folder, then a file of the same name
], ids=["name-too-long", "file-then-folder", "folder-then-file"])
def test_entries_that_cannot_be_unpacked_are_a_bad_archive(tmp_path, entries):
    with pytest.raises(StudyError) as info:
        unpack_zip(_zip(tmp_path, entries), tmp_path / "out")
    assert info.value.code is ErrorCode.BAD_ARCHIVE
    assert NAME not in info.value.message and "entry" in info.value.message


@pytest.mark.parametrize("entry", ["../escape.dcm", "/abs.dcm"])
def test_escaping_entries_are_refused_by_number(tmp_path, entry):
    with pytest.raises(StudyError) as info:
        unpack_zip(_zip(tmp_path, [("ok.dcm", b"x"), (entry, b"x")]), tmp_path / "out")
    assert info.value.code is ErrorCode.BAD_ARCHIVE and "entry 2" in info.value.message
    assert "escape" not in info.value.message and "abs" not in info.value.message


def _nifti_with_sform(tmp_path: Path, value: float) -> Path:
    """A sagittal-looking NIfTI whose sform is all ``value`` (0 or NaN) and whose qform is unset, written byte by byte
    (nibabel refuses to write such a header itself)."""
    image = nib.Nifti1Image(np.random.default_rng(0).random((12, 64, 64), dtype=np.float32), np.eye(4))
    header = image.header
    header["vox_offset"] = 352  # the 348-byte header, then 4 bytes of "no extension"
    header.set_qform(None, code=0)
    header["sform_code"] = 1
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row] = np.full(4, value, dtype=np.float32)
    data = header.binaryblock + b"\0" * (int(header["vox_offset"]) - len(header.binaryblock)) \
        + image.get_fdata(dtype=np.float32).tobytes(order="F")
    path = tmp_path / f"{NAME}.nii.gz"
    path.write_bytes(gzip.compress(data))
    return path


@pytest.mark.parametrize("value", [0.0, float("nan")], ids=["zero-sform", "nan-sform"])
def test_a_degenerate_sform_is_absurd_spacing(tmp_path, value):
    _nifti_with_sform(tmp_path, value)
    with pytest.raises(StudyError) as info:
        open_study(tmp_path)
    assert info.value.code in (ErrorCode.ABSURD_SPACING, ErrorCode.NOT_AN_IMAGE)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_server_disk_is_not_blamed_on_the_upload(tmp_path):
    """Writing the unpacked entry fails with ENOSPC (the entry's path leads to /dev/full): that is the server's
    fault, so it stays an OSError (a coded 500 in Serve), not a 400 bad_archive."""
    import errno

    archive = _zip(tmp_path, [("study/a.dcm", b"DICM" * 1000)])
    dest = tmp_path / "unpacked"
    (dest / "study").mkdir(parents=True)
    (dest / "study" / "a.dcm").symlink_to("/dev/full")
    with pytest.raises(OSError) as caught:
        unpack_zip(archive, dest)
    assert caught.value.errno == errno.ENOSPC and not isinstance(caught.value, StudyError)
    # A damaged archive is still the client's: a 400.
    broken = tmp_path / "broken.zip"
    broken.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(StudyError) as refused:
        unpack_zip(broken, tmp_path / "other")
    assert refused.value.code is ErrorCode.BAD_ARCHIVE
