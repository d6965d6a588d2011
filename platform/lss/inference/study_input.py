"""One study from whatever a user hands over: a DICOM folder, a zip of one, a NIfTI/MHA file or a folder of them.

Zips are unpacked with the checks an upload needs (no absolute paths or ``..`` entries, no links, a cap on the
unpacked size, checked against the archive's declared sizes before anything is written and against the bytes
actually written while unpacking). The study is then found by the generic adapter
(``lss.data.adapters.generic``), which knows nothing of patients: ids come from file and folder names, so no message
here quotes one. The adapter reads the image headers within the reading budget (``limits``; see
``lss.data.io.limits``).
"""

from __future__ import annotations

import errno
import lzma
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from lss.config import InputLimits
from lss.data.adapters.generic import discover
from lss.data.errors import ErrorCode, StudyError
from lss.data.manifest import StudyRecord

__all__ = ["unpack_zip", "open_study"]

_CHUNK = 1 << 20


# Errors of the server's own disk while unpacking (full, over quota, read-only): never blamed on the upload.
_SERVER_FAULTS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def unpack_zip(archive: str | Path, dest: str | Path, max_unpacked_bytes: int = 1 << 30) -> Path:
    """Unpacks a zip safely.

    Args:
        archive: the zip file.
        dest: an empty or missing folder to unpack into.
        max_unpacked_bytes: limit on the total unpacked size.

    Returns:
        ``dest``.

    Raises:
        StudyError: BAD_ARCHIVE when the file is not a zip, an entry escapes ``dest`` or is a link, or the content
            is larger than ``max_unpacked_bytes``.
    """
    archive, dest = Path(archive), Path(dest)
    if not zipfile.is_zipfile(archive):
        raise StudyError(ErrorCode.BAD_ARCHIVE, "the upload is not a zip archive.")
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = zf.infolist()
            declared = sum(e.file_size for e in entries)
            if declared > max_unpacked_bytes:
                raise StudyError(ErrorCode.BAD_ARCHIVE, f"the archive unpacks to {declared / 2**20:.0f} MiB, more "
                                 f"than the limit of {max_unpacked_bytes / 2**20:.0f} MiB.")
            dest.mkdir(parents=True, exist_ok=True)
            written = 0
            for number, entry in enumerate(entries, start=1):
                # Entries are named by number only: their names can carry patient names.
                name = PurePosixPath(entry.filename.replace("\\", "/"))
                if name.is_absolute() or ".." in name.parts or (name.parts and name.parts[0].endswith(":")):
                    raise StudyError(ErrorCode.BAD_ARCHIVE, f"archive entry {number} points outside the archive.")
                if stat.S_ISLNK(entry.external_attr >> 16):
                    raise StudyError(ErrorCode.BAD_ARCHIVE, f"archive entry {number} is a link.")
                target = dest.joinpath(*name.parts)
                try:
                    if entry.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    sink = open(target, "wb")  # noqa: SIM115 - closed by the `with` below
                except OSError as error:
                    if error.errno in _SERVER_FAULTS:
                        raise
                    # A name too long for the file system, a file and a folder of the same name, a duplicate entry.
                    raise StudyError(ErrorCode.BAD_ARCHIVE, f"archive entry {number} cannot be unpacked (a name too "
                                     "long, or a file and a folder of the same name).") from None
                # Declared sizes can lie (a zip bomb): count what is really written.
                with sink, zf.open(entry) as source:
                    while chunk := source.read(_CHUNK):
                        written += len(chunk)
                        if written > max_unpacked_bytes:
                            raise StudyError(ErrorCode.BAD_ARCHIVE, "the archive unpacks to more than the limit "
                                             f"of {max_unpacked_bytes / 2**20:.0f} MiB.")
                        sink.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError, zlib.error,
            lzma.LZMAError, OSError) as error:
        if isinstance(error, OSError) and error.errno in _SERVER_FAULTS:
            raise  # our disk, not the client's archive: not a 4xx
        # A corrupt or unsupported entry (deflate, bzip2 and lzma each raise their own; bzip2's is an OSError). The
        # library's message can quote an entry name: say what kind of failure it was, not what it said.
        raise StudyError(ErrorCode.BAD_ARCHIVE, "the zip archive cannot be read (corrupt, encrypted or an "
                         "unsupported compression).") from None
    return dest


def open_study(path: str | Path, workdir: str | Path | None = None, max_unpacked_bytes: int = 1 << 30, *,
               limits: InputLimits | None = None) -> StudyRecord:
    """The one study at ``path``.

    Args:
        path: a DICOM folder, a ``.zip`` of one, a NIfTI/MHA file, or a folder of image files.
        workdir: where a zip is unpacked (required for zips; the caller owns and removes it).
        max_unpacked_bytes: limit on a zip's unpacked size.
        limits: the reading budget of the headers the adapter reads (``preprocess.limits``); None for the defaults.

    Raises:
        StudyError: NOT_FOUND / NO_IMAGE / BAD_ARCHIVE, MISSING_SAGITTAL (or the reader's code, IMAGE_TOO_LARGE
            included) when the study is unusable, MULTIPLE_STUDIES when the path holds several studies.
    """
    path = Path(path)
    if not path.exists():
        raise StudyError(ErrorCode.NOT_FOUND, "the study path does not exist.", str(path))
    if path.is_file() and path.suffix.lower() == ".zip":
        if workdir is None:
            raise ValueError("a zip needs a workdir to be unpacked into.")
        root = Path(workdir) / path.stem
        if root.exists():
            shutil.rmtree(root)
        path = unpack_zip(path, root, max_unpacked_bytes)
    result = discover(path, limits=limits)
    if len(result.records) > 1:
        # Counted, not listed: study ids are folder and file names.
        raise StudyError(ErrorCode.MULTIPLE_STUDIES, f"expected one study, found {len(result.records)}; give one "
                         "study's folder or file.")
    if not result.records:
        if result.errors:
            first = result.errors[0]
            raise StudyError(first["code"], first["message"])
        raise StudyError(ErrorCode.NO_IMAGE, "no usable study was found.")
    return result.records[0]
