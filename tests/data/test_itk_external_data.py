"""MetaImage / NRRD headers may name a separate voxel data file; an upload must never make the reader load a file
outside its own folder (``ElementDataFile = /etc/passwd`` would show the server's file as the image)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from lss.data.errors import ErrorCode, StudyError
from lss.data.io import read_volume, write_mha
from lss.data.io.itk import read_itk, read_itk_geometry
from lss.data.volume import Volume

SHAPE = (4, 5, 6)


def _secret(tmp_path: Path) -> Path:
    """A server-side file of exactly the voxel count a 4x5x6 uint8 header declares (so a reader would accept it)."""
    secret = tmp_path / "server" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(bytes(range(120)))
    return secret


def _metaimage(folder: Path, data_file: str, name: str = "a.mha") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = folder / name
    header.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 5 6\nElementType = MET_UCHAR\n"
                      "ElementSpacing = 1 1 1\nOffset = 0 0 0\nTransformMatrix = 1 0 0 0 1 0 0 0 1\n"
                      f"ElementDataFile = {data_file}\n")
    return header


def _nrrd(folder: Path, data_file: str, name: str = "a.nhdr", key: str = "data file") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = folder / name
    header.write_text("NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 5 6\nspace: left-posterior-superior\n"
                      "space directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\nencoding: raw\n"
                      f"{key}: {data_file}\n\n")
    return header


@pytest.mark.parametrize("make", [
    lambda tmp, secret: _metaimage(tmp / "upload", str(secret)),                        # absolute path
    lambda tmp, secret: _metaimage(tmp / "upload", "../server/secret.bin"),             # relative, out of the folder
    lambda tmp, secret: _metaimage(tmp / "upload", "LIST"),                             # a list of files
    lambda tmp, secret: _metaimage(tmp / "upload", "slice%03d.raw 1 6 1"),              # a file-name pattern
    lambda tmp, secret: _nrrd(tmp / "upload", str(secret)),
    lambda tmp, secret: _nrrd(tmp / "upload", "../server/secret.bin", key="datafile"),
    lambda tmp, secret: _nrrd(tmp / "upload", "LIST"),
], ids=["mha-absolute", "mha-dotdot", "mha-list", "mha-pattern", "nhdr-absolute", "nhdr-dotdot", "nhdr-list"])
def test_a_header_pointing_outside_its_folder_is_refused(tmp_path, make):
    header = make(tmp_path, _secret(tmp_path))
    for reader in (read_itk, read_itk_geometry, read_volume):
        with pytest.raises(StudyError) as info:
            reader(header)
        assert info.value.code is ErrorCode.UNSUPPORTED_FORMAT
        assert "secret" not in info.value.message and "server" not in info.value.message


def test_a_link_beside_the_header_that_leads_out_is_refused(tmp_path):
    secret = _secret(tmp_path)
    header = _metaimage(tmp_path / "upload", "data.raw")
    os.symlink(secret, tmp_path / "upload" / "data.raw")
    with pytest.raises(StudyError) as info:
        read_itk(header)
    assert info.value.code is ErrorCode.UNSUPPORTED_FORMAT


def test_a_header_naming_a_missing_data_file_is_a_coded_error(tmp_path):
    with pytest.raises(StudyError) as info:
        read_itk(_metaimage(tmp_path / "upload", "gone.raw"))
    assert info.value.code is ErrorCode.TRUNCATED


@pytest.mark.parametrize("suffix", [".mhd", ".mha", ".nrrd"])
def test_files_the_project_writes_still_read(tmp_path, suffix):
    """Inline data (.mha, .nrrd) and a data file beside its header (.mhd + .raw/.zraw) are read as before."""
    array = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    path = write_mha(Volume(array=array, affine=np.diag([0.8, 0.8, 3.5, 1.0])), tmp_path / f"v{suffix}")
    assert np.array_equal(read_itk(path).array, array)


def test_an_nhdr_with_its_data_file_beside_it_reads(tmp_path):
    folder = tmp_path / "upload"
    header = _nrrd(folder, "a.raw")
    (folder / "a.raw").write_bytes(bytes(range(120)))
    volume = read_itk(header)
    assert volume.array.shape == SHAPE and int(volume.array.max()) == 119
