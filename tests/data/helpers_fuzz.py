"""Seeded mutations of small valid uploads (DICOM folder, zip of it, NIfTI, MetaImage) for the reader fuzz test.

``seed_inputs`` builds the valid inputs once; ``make_case(fmt, seed, seeds)`` returns the files of one mutated upload
(``Case``) and a description of what was done to it, so that a failing ``(fmt, seed)`` can be rebuilt and read by
hand. Every random choice comes from ``numpy.random.default_rng(seed)`` (and ``fmt``): the same case every run.

Client-supplied text carries markers the test looks for in error messages: ``NAME_MARKER`` in file, folder and zip
entry names, ``VALUE_MARKER`` in DICOM text values (PatientName, PatientID, SeriesDescription, ...).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from helpers_io import image_volume, sagittal_axes, write_series
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.tag import Tag
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from lss.data.io import write_mha, write_nifti
from lss.data.volume import Volume

__all__ = ["NAME_MARKER", "VALUE_MARKER", "MARKER_FRAGMENTS", "FORMATS", "Seeds", "Case", "seed_inputs", "make_case",
           "valid_case", "run_case", "run_in_workers", "leaked_fragments", "limits_argument",
           "fuzz_config"]

NAME_MARKER = "Smith^John_MRN-67890"  # in file / folder / zip entry names
VALUE_MARKER = "Roe^Richard_MRN-24680"  # in DICOM text values
# What a message must not hold: the markers, their parts, and their forms after a name sanitiser ("^" -> "_").
MARKER_FRAGMENTS = ("Smith^John", "Smith_John", "MRN-67890", "Roe^Richard", "Roe_Richard", "MRN-24680")

FORMATS = ("dicom", "zip", "nifti", "mha")
SHAPE = (48, 40, 5)  # (I, J, K): 5 sagittal slices of 40 rows x 48 columns


def leaked_fragments(text: str) -> list[str]:
    """The marker fragments ``text`` contains."""
    return [fragment for fragment in MARKER_FRAGMENTS if fragment.lower() in text.lower()]


# ------------------------------------------------------------------------------------------------------------ seeds
@dataclass(frozen=True)
class Seeds:
    """The valid inputs every case starts from.

    Attributes:
        dicom: slice file name -> bytes of a 5-slice sagittal MR series (patient text = ``VALUE_MARKER``).
        nifti: the same image as an uncompressed NIfTI-1 (int16).
        mha: the same image as an uncompressed MetaImage (int16).
        mha_compressed: with zlib-compressed voxel data.
    """

    dicom: dict[str, bytes]
    nifti: bytes
    mha: bytes
    mha_compressed: bytes


def seed_inputs(folder: Path) -> Seeds:
    """Writes the valid inputs under ``folder`` (scratch) and returns their bytes (the same bytes every run: fixed
    UIDs, so that a byte offset in a case's description means the same byte next time)."""
    base = image_volume(sagittal_axes(), shape=SHAPE)
    volume = Volume(np.round(base.array).astype(np.int16), base.affine)
    paths = write_series(volume, folder / "dicom", study_uid="2.25.1001", series_uid="2.25.1002",
                         frame_of_reference_uid="2.25.1003", series_description=f"T2 SAG {VALUE_MARKER}",
                         patient_name=VALUE_MARKER, patient_id=VALUE_MARKER, study_description=VALUE_MARKER)
    dicom = {}
    for index, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"2.25.{2001 + index}"
        ds.InstitutionName = VALUE_MARKER
        ds.ProtocolName = VALUE_MARKER
        dicom[path.name] = _dicom_bytes(ds)
    return Seeds(
        dicom=dicom,
        nifti=write_nifti(volume, folder / "seed.nii").read_bytes(),
        mha=write_mha(volume, folder / "seed.mha", compress=False).read_bytes(),
        mha_compressed=write_mha(volume, folder / "seed_z.mha", compress=True).read_bytes(),
    )


# ------------------------------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    """One mutated upload.

    Attributes:
        files: path relative to the case folder -> content.
        target: what ``open_study`` gets, relative to the case folder ("" = the folder itself).
        steps: what was done, in order (for the report of a failing case).
    """

    files: dict[str, bytes] = field(default_factory=dict)
    target: str = ""
    steps: list[str] = field(default_factory=list)

    @property
    def mutation(self) -> str:
        return "; ".join(self.steps) or "none"

    def write(self, folder: Path) -> Path:
        for name, data in self.files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return folder / self.target if self.target else folder


def make_case(fmt: str, seed: int, seeds: Seeds) -> Case:
    """The mutated upload of format ``fmt`` ("dicom", "zip", "nifti" or "mha") for ``seed``."""
    rng = np.random.default_rng([seed, FORMATS.index(fmt)])
    return {"dicom": _dicom_case, "zip": _zip_case, "nifti": _nifti_case, "mha": _mha_case}[fmt](rng, seeds)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


# ------------------------------------------------------------------------------------------------------------ bytes
def _position(rng: np.random.Generator, size: int, header: int) -> int:
    """A position in ``[0, size)``, in the first ``header`` bytes half the time (headers break more interestingly)."""
    limit = min(size, header) if rng.random() < 0.5 else size
    return int(rng.integers(max(limit, 1)))


def flip_bytes(rng: np.random.Generator, data: bytes, header: int = 512) -> tuple[bytes, str]:
    out = bytearray(data)
    count = int(rng.integers(1, 9))
    where = sorted(_position(rng, len(out), header) for _ in range(count))
    for position in where:
        out[position] ^= int(rng.integers(1, 256))
    return bytes(out), f"flip {count} byte(s) at {where}"


def truncate(rng: np.random.Generator, data: bytes, header: int = 512) -> tuple[bytes, str]:
    at = _position(rng, len(data), header)
    return data[:at], f"truncate at {at} of {len(data)}"


def insert_chunk(rng: np.random.Generator, data: bytes, header: int = 512) -> tuple[bytes, str]:
    at = _position(rng, len(data), header)
    chunk = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
    return data[:at] + chunk + data[at:], f"insert {len(chunk)} random byte(s) at {at}"


def delete_chunk(rng: np.random.Generator, data: bytes, header: int = 512) -> tuple[bytes, str]:
    at = _position(rng, len(data), header)
    length = int(rng.integers(1, 65))
    return data[:at] + data[at + length:], f"delete {length} byte(s) at {at}"


def duplicate_chunk(rng: np.random.Generator, data: bytes, header: int = 512) -> tuple[bytes, str]:
    at = _position(rng, len(data), header)
    length = int(rng.integers(1, 129))
    return data[:at] + data[at:at + length] + data[at:], f"repeat {length} byte(s) at {at}"


BYTE_MUTATORS: tuple[Callable[..., tuple[bytes, str]], ...] = (
    flip_bytes, truncate, insert_chunk, delete_chunk, duplicate_chunk
)


def mutate_bytes(rng: np.random.Generator, data: bytes, header: int = 512) -> tuple[bytes, str]:
    return _pick(rng, BYTE_MUTATORS)(rng, data, header)


# ------------------------------------------------------------------------------------------------------------ NIfTI
_HEADER = nib.nifti1.header_dtype
_FLOATS = (0.0, -0.0, -1.0, 1e-30, 1e-6, 0.05, 1.0, 12.5, 1e6, 1e30, 3.4e38, float("nan"), float("inf"),
           float("-inf"))
_INT16 = (-32768, -1, 0, 1, 2, 3, 4, 5, 7, 8, 64, 255, 1000, 32767)


def _put(header: bytearray, name: str, value, index: int | None = None) -> None:
    dtype, offset = _HEADER.fields[name][:2]
    if index is not None:
        base = dtype.base
        offset += index * base.itemsize
        dtype = base
    header[offset:offset + dtype.itemsize] = np.asarray(value).astype(dtype).tobytes()


def _nifti_header_edit(rng: np.random.Generator, data: bytes) -> tuple[bytes, str]:
    out = bytearray(data)
    kind = _pick(rng, ("dim", "dim0", "datatype", "bitpix", "vox_offset", "pixdim", "scl", "qform", "sform",
                       "srow", "quatern", "sizeof_hdr", "magic", "extension", "dim_info", "xyzt_units",
                       "datatype+bitpix", "intent"))
    if kind == "dim":
        index = int(rng.integers(1, 8))
        value = _pick(rng, _INT16)
        _put(out, "dim", value, index)
        return bytes(out), f"dim[{index}] = {value}"
    if kind == "dim0":
        value = _pick(rng, (-1, 0, 1, 2, 4, 5, 7, 8, 9, 100, -32768))
        _put(out, "dim", value, 0)
        return bytes(out), f"dim[0] = {value}"
    if kind == "datatype":
        value = _pick(rng, (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304,
                            9999, -1))
        _put(out, "datatype", value)
        return bytes(out), f"datatype = {value}"
    if kind == "bitpix":
        value = _pick(rng, (-16, 0, 1, 7, 8, 32, 64, 256, 32767))
        _put(out, "bitpix", value)
        return bytes(out), f"bitpix = {value}"
    if kind == "datatype+bitpix":
        datatype, bitpix = _pick(rng, ((2, 8), (16, 32), (64, 64), (32, 64), (128, 24), (1536, 128), (2304, 32),
                                       (1, 1), (768, 32), (1792, 128)))
        _put(out, "datatype", datatype)
        _put(out, "bitpix", bitpix)
        return bytes(out), f"datatype = {datatype}, bitpix = {bitpix}"
    if kind == "vox_offset":
        value = _pick(rng, (0.0, 1.0, 100.0, 347.0, 348.0, 351.0, 352.0, 353.0, 4096.0, float(len(data)),
                            float(len(data) + 100), 1e9, 3e38, -1.0, -352.0, float("nan"), float("inf")))
        _put(out, "vox_offset", value)
        return bytes(out), f"vox_offset = {value}"
    if kind == "pixdim":
        index = int(rng.integers(0, 8))
        value = _pick(rng, _FLOATS)
        _put(out, "pixdim", value, index)
        return bytes(out), f"pixdim[{index}] = {value}"
    if kind == "scl":
        name = _pick(rng, ("scl_slope", "scl_inter"))
        value = _pick(rng, _FLOATS)
        _put(out, name, value)
        return bytes(out), f"{name} = {value}"
    if kind in ("qform", "sform"):
        value = _pick(rng, (-1, 0, 1, 2, 3, 4, 5, 999, -32768))
        _put(out, f"{kind}_code", value)
        return bytes(out), f"{kind}_code = {value}"
    if kind == "srow":
        row = _pick(rng, ("srow_x", "srow_y", "srow_z"))
        values = _pick(rng, ((0.0, 0.0, 0.0, 0.0), (float("nan"),) * 4, (float("inf"), 0.0, 0.0, 0.0),
                             (1e30, 1e30, 1e30, 1e30), (1e-30, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1e30),
                             (-3.4e38, 3.4e38, 0.0, 0.0), (1.0, 1.0, 1.0, 0.0)))
        _put(out, row, values)
        return bytes(out), f"{row} = {values}"
    if kind == "quatern":
        name = _pick(rng, ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z"))
        value = _pick(rng, (-2.0, 2.0, 1.0, 0.999999, *_FLOATS))
        _put(out, name, value)
        return bytes(out), f"{name} = {value}"
    if kind == "sizeof_hdr":
        value = _pick(rng, (0, 1, 347, 349, 540, 1 << 24, -348, 0x5C010000))
        _put(out, "sizeof_hdr", value)
        return bytes(out), f"sizeof_hdr = {value}"
    if kind == "magic":
        value = _pick(rng, (b"ni1\0", b"n+2\0", b"\0\0\0\0", b"n+1x", b"XXXX"))
        _put(out, "magic", value)
        return bytes(out), f"magic = {value!r}"
    if kind == "dim_info":
        value = _pick(rng, (0, 1, 0x39, 255))
        _put(out, "dim_info", value)
        return bytes(out), f"dim_info = {value}"
    if kind == "xyzt_units":
        value = _pick(rng, (0, 1, 2, 3, 8, 16, 255))
        _put(out, "xyzt_units", value)
        return bytes(out), f"xyzt_units = {value}"
    if kind == "intent":
        value = _pick(rng, (0, 2, 1002, 1007, 2003, 2005, 32767))
        _put(out, "intent_code", value)
        return bytes(out), f"intent_code = {value}"
    # kind == "extension": an extension flag, then a (maybe lying) extension header before the voxels.
    esize = _pick(rng, (0, 8, 15, 16, 32, 1 << 20, 1 << 30, -16, 0x7FFFFFF0))
    ecode = _pick(rng, (0, 4, 6, 40, 9999))
    payload = rng.integers(0, 256, 24, dtype=np.uint8).tobytes()
    out[348:352] = b"\x01\0\0\0"
    out[352:352] = struct.pack("<ii", esize, ecode) + payload
    _put(out, "vox_offset", float(_pick(rng, (352, 352 + 32, 352 + 48))))
    return bytes(out), f"extension esize {esize} ecode {ecode} (+32 bytes)"


def _nifti_case(rng: np.random.Generator, seeds: Seeds) -> Case:
    case = Case()
    data = seeds.nifti
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.65:
            data, step = _nifti_header_edit(rng, data)
        else:
            data, step = mutate_bytes(rng, data, header=352)
        case.steps.append(step)
    compressed = rng.random() < 0.5
    if compressed:
        data = gzip.compress(data, mtime=0)
        if rng.random() < 0.25:
            data, step = mutate_bytes(rng, data, header=64)
            case.steps.append(f"gzip stream: {step}")
    stem = NAME_MARKER if rng.random() < 0.5 else "study"
    case.target = f"{stem}.nii.gz" if compressed else f"{stem}.nii"
    case.files[case.target] = data
    case.steps.insert(0, f"file {case.target}")
    return case


# ------------------------------------------------------------------------------------------------------------ MHA
def _split_mha(data: bytes) -> tuple[list[str], bytes]:
    end = data.index(b"ElementDataFile")
    end = data.index(b"\n", end) + 1
    return data[:end].decode("ascii").splitlines(), data[end:]


_MHA_VALUES: dict[str, tuple[str, ...]] = {
    "NDims": ("0", "1", "2", "4", "10", "-1", "100", "3.5", "x", ""),
    "DimSize": ("0 0 0", "48 40 0", "-1 40 5", "48 40", "48 40 5 1", "48 40 5 2", "40 48 5", "1 1 1",
                "65535 65535 65535", "100000 100000 100", "4294967295 1 1", "1e10 1 1", "a b c", "48 40 5000", ""),
    "ElementType": ("MET_UCHAR", "MET_CHAR", "MET_USHORT", "MET_INT", "MET_UINT", "MET_LONG_LONG", "MET_FLOAT",
                    "MET_DOUBLE", "MET_UCHAR_ARRAY", "MET_OTHER", "MET_NONE", "FOO", ""),
    "ElementSpacing": ("0 0 0", "0 0.9 3", "-0.8 0.9 3", "nan nan nan", "inf 1 1", "1e308 1e308 1e308", "1e-30 1 1",
                       "0.8", "0.8 0.9 3 4", "a b c", "15 15 15", "0.01 0.01 0.01"),
    "ElementDataFile": ("LOCAL", "local", "/etc/passwd", "../outside.raw", "LIST", "%d.raw 1 5 1",
                        f"{NAME_MARKER}.raw", "missing.raw", "", "beside.raw", "."),
    "CompressedData": ("True", "False", "true", "1", "maybe"),
    "CompressedDataSize": ("0", "1", "-1", "18446744073709551615", "10", "abc"),
    "Offset": ("nan nan nan", "inf 0 0", "1e308 1e308 1e308", "0 0", "0 0 0 0", "a b c", ""),
    "TransformMatrix": ("0 0 0 0 0 0 0 0 0", "1 0 0 1 0 0 0 0 1", "nan 0 0 0 1 0 0 0 1", "1 0 0 0 1 0",
                        "2 0 0 0 2 0 0 0 2", "1 1 0 1 1 0 0 0 1", "1e308 0 0 0 1e308 0 0 0 1e308", "a b c d e f g h i"),
    "ElementNumberOfChannels": ("0", "3", "1000000", "-1"),
    "HeaderSize": ("-1", "0", "100000000", "3"),
    "BinaryDataByteOrderMSB": ("True", "False", "x"),
    "ObjectType": ("Image", "Mesh", "Foo", ""),
    "ElementMin": ("nan",),
    "AnatomicalOrientation": ("RAI", "XYZ", "???"),
}


# The fields that size and place the image are edited more often than the rest.
_MHA_WEIGHTS = {"NDims": 3.0, "DimSize": 3.0, "ElementType": 2.0, "ElementSpacing": 2.0, "ElementDataFile": 2.0,
                "TransformMatrix": 2.0}


def _mha_header_edit(rng: np.random.Generator, lines: list[str], files: dict[str, bytes]) -> str:
    keys = tuple(_MHA_VALUES)
    weights = np.array([_MHA_WEIGHTS.get(key, 1.0) for key in keys])
    key = keys[int(rng.choice(len(keys), p=weights / weights.sum()))]
    value = _pick(rng, _MHA_VALUES[key])
    action = _pick(rng, ("set", "set", "set", "delete", "duplicate"))
    index = next((n for n, line in enumerate(lines) if line.split("=")[0].strip() == key), None)
    if action == "delete" and index is not None and key != "ElementDataFile":
        del lines[index]
        return f"delete {key}"
    line = f"{key} = {value}"
    if action == "duplicate" and index is not None:
        lines.insert(index, line)
        return f"duplicate {key} = {value!r}"
    if key == "ElementDataFile" and value == "beside.raw":
        files["beside.raw"] = rng.integers(0, 256, int(rng.integers(0, 48 * 40 * 5 * 2 + 2)), dtype=np.uint8).tobytes()
    if index is None:
        lines.insert(len(lines) - 1 if lines else 0, line)  # before ElementDataFile, which must stay last
    else:
        lines[index] = line
    return f"{key} = {value!r}"


def _mha_case(rng: np.random.Generator, seeds: Seeds) -> Case:
    case = Case()
    compressed = rng.random() < 0.5
    lines, body = _split_mha(seeds.mha_compressed if compressed else seeds.mha)
    case.steps.append("compressed" if compressed else "raw")
    for _ in range(int(rng.integers(1, 4))):
        if rng.random() < 0.7:
            case.steps.append(_mha_header_edit(rng, lines, case.files))
        else:
            body, step = mutate_bytes(rng, body, header=64)
            case.steps.append(f"voxel data: {step}")
    data = ("\n".join(lines) + "\n").encode("ascii") + body
    if rng.random() < 0.15:
        data, step = mutate_bytes(rng, data, header=400)
        case.steps.append(f"whole file: {step}")
    stem = NAME_MARKER if rng.random() < 0.5 else "study"
    case.target = f"{stem}.mha"
    case.files[case.target] = data
    case.steps.insert(0, f"file {case.target}")
    return case


# ------------------------------------------------------------------------------------------------------------ DICOM
@contextlib.contextmanager
def _lenient_writing():
    """pydicom writes invalid values as given (the readers' reading settings are left alone)."""
    settings = pydicom.config.settings
    before = settings.writing_validation_mode
    settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.writing_validation_mode = before


def _dicom_bytes(ds: pydicom.Dataset, patch: set[str] = frozenset()) -> bytes:
    """The file's bytes; the elements named in ``patch`` (written as LO by ``_set_raw``) get their dictionary VR."""
    out = io.BytesIO()
    with _lenient_writing():
        ds.save_as(out, enforce_file_format=False)
    data = out.getvalue()
    for keyword in sorted(patch):  # explicit VR little endian: (group, element, "LO", length)
        tag = Tag(keyword)
        at = data.find(struct.pack("<HH", tag.group, tag.element) + b"LO", 132)
        vr = dictionary_VR(tag)
        if at >= 0 and vr in ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UI",
                              "US", "SS", "UL", "SL", "FL", "FD", "AT"):
            data = data[:at + 4] + vr.encode() + data[at + 6:]
    return data


def _set_raw(ds: pydicom.Dataset, keyword: str, value: bytes, patch: set[str]) -> None:
    """Puts these bytes as the value of ``keyword``, whatever its VR allows: written as LO (pydicom writes text
    as given) and given its dictionary VR back in the file by ``_dicom_bytes(ds, patch)``, so that a reader sees
    the element a broken or hostile writer would have made."""
    tag = Tag(keyword)
    ds[tag] = DataElement(tag, "LO", value)
    patch.add(keyword)


_US = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel")
_US_VALUES = {
    "Rows": (0, 1, 39, 41, 4096, 65535), "Columns": (0, 1, 47, 49, 4096, 65535),
    "BitsAllocated": (0, 1, 7, 8, 12, 32, 64, 65535), "BitsStored": (0, 1, 8, 17, 32, 65535),
    "HighBit": (0, 7, 16, 31, 65535), "PixelRepresentation": (1, 2, 65535), "SamplesPerPixel": (0, 2, 3, 4, 65535),
}
_TEXT_VALUES: dict[str, tuple[bytes, ...]] = {
    "NumberOfFrames": (b"0 ", b"1 ", b"2 ", b"-1", b"999999999 ", b"1e9 ", b"abc ", b"nan "),
    "ImagePositionPatient": (b"nan\\0\\0 ", b"inf\\0\\0 ", b"1e308\\0\\0 ", b"1e400\\1\\1 ", b"0\\0", b"0\\0\\0\\0",
                             b"a\\b\\c ", b"", b"0\\0\\0 "),
    "ImageOrientationPatient": (b"0\\0\\0\\0\\0\\0 ", b"1\\0\\0\\1\\0\\0 ", b"nan\\1\\0\\0\\0\\1 ",
                                b"1\\0\\0\\0\\1\\0 ", b"0\\1\\0\\0\\0\\-1", b"1\\0\\0\\0\\0", b"1e308\\0\\0\\0\\1\\0 ",
                                b"0.7\\0.7\\0\\0\\0\\-1 ", b"x\\y\\z\\a\\b\\c ", b""),
    "PixelSpacing": (b"0\\0 ", b"-0.9\\0.8", b"nan\\0.8 ", b"inf\\inf ", b"1e-9\\1e-9 ", b"1e9\\1e9 ", b"0.9 ",
                     b"0.9\\0.8\\0.7 ", b"abc ", b""),
    "SliceThickness": (b"0 ", b"-3", b"nan ", b"1e308 ", b"abc ", b""),
    "SpacingBetweenSlices": (b"0 ", b"-3", b"nan ", b"1e9 ", b""),
    "RescaleSlope": (b"0 ", b"nan ", b"inf ", b"1e308 ", b"-1", b"abc ", b""),
    "RescaleIntercept": (b"nan ", b"-inf", b"1e308 ", b""),
    "Modality": (b"CT", b"", b"mr", b"OT", VALUE_MARKER.encode() + b" "),
    "PhotometricInterpretation": (b"RGB ", b"PALETTE COLOR ", b"YBR_FULL", b"MONOCHROME1 ", b"FOO ", b"",
                                  VALUE_MARKER.encode() + b" "),
    "SeriesInstanceUID": (b"", b"1.2.3\0", VALUE_MARKER.encode() + b" ", b"2.25.1"),
    "StudyInstanceUID": (b"", b"2.25.2\0", VALUE_MARKER.encode() + b" "),
    "InstanceNumber": (b"abc ", b"-1", b""),
    "SOPClassUID": (b"1.2.840.10008.5.1.4.1.1.88.11\0", b"1.2.3\0", b"", VALUE_MARKER.encode() + b" "),
    "SeriesDescription": (b"LOCALIZER " + VALUE_MARKER.encode(), VALUE_MARKER.encode() * 20, b"\xff\xfe\x00\x01"),
    "SpecificCharacterSet": (b"ISO 2022 IR 87", b"FOO ", b"ISO_IR 100\\ISO_IR 999", VALUE_MARKER.encode() + b" "),
}
_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit,
             JPEG2000Lossless, JPEGLSLossless, RLELossless, "1.2.3.4.5", "", VALUE_MARKER)
_DELETABLE = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation", "SamplesPerPixel",
              "PhotometricInterpretation", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
              "SliceThickness", "SeriesInstanceUID", "StudyInstanceUID", "Modality", "PixelData", "SOPClassUID",
              "RescaleSlope", "SpacingBetweenSlices", "InstanceNumber")


def _dicom_edit(rng: np.random.Generator, datasets: list[pydicom.Dataset], patches: list[set[str]]) -> str:
    """One header edit, on every slice or on one slice only."""
    everywhere = rng.random() < 0.5
    targets = datasets if everywhere else [datasets[int(rng.integers(len(datasets)))]]
    where = "all slices" if everywhere else f"slice {datasets.index(targets[0])}"
    kind = _pick(rng, ("us", "us", "text", "text", "text", "syntax", "delete", "delete_random", "wrong_length",
                       "pixels"))
    if kind == "us":
        keyword = _pick(rng, _US)
        value = _pick(rng, _US_VALUES[keyword])
        for ds in targets:
            setattr(ds, keyword, value)
        return f"{keyword} = {value} ({where})"
    if kind == "text":
        keyword = _pick(rng, tuple(_TEXT_VALUES))
        value = _pick(rng, _TEXT_VALUES[keyword])
        for ds in targets:
            _set_raw(ds, keyword, value, patches[datasets.index(ds)])
        return f"{keyword} = {value!r} ({where})"
    if kind == "syntax":
        syntax = _pick(rng, _SYNTAXES)
        for ds in targets:
            ds.file_meta.TransferSyntaxUID = syntax
        return f"TransferSyntaxUID = {syntax!r}, pixels unchanged ({where})"
    if kind == "delete":
        keyword = _pick(rng, _DELETABLE)
        for ds in targets:
            if keyword in ds:
                del ds[keyword]
        return f"delete {keyword} ({where})"
    if kind == "delete_random":
        tags = [element.tag for element in targets[0]]
        tag = tags[int(rng.integers(len(tags)))]
        for ds in targets:
            if tag in ds:
                del ds[tag]
        return f"delete {tag} ({where})"
    if kind == "wrong_length":  # a binary US value of a length its VR cannot have
        keyword = _pick(rng, _US)
        value = rng.integers(0, 256, _pick(rng, (0, 1, 3, 4, 6)), dtype=np.uint8).tobytes()
        for ds in targets:
            _set_raw(ds, keyword, value, patches[datasets.index(ds)])
        return f"{keyword} = {len(value)} raw byte(s) {value.hex()} ({where})"
    # kind == "pixels"
    change = _pick(rng, ("short", "long", "empty", "odd"))
    for ds in targets:
        data = ds.PixelData
        ds.PixelData = {"short": data[: len(data) // 2], "long": data + data, "empty": b"", "odd": data[:-1]}[change]
    return f"PixelData {change} ({where})"


def _dicom_files(rng: np.random.Generator, seeds: Seeds, steps: list[str], marker_names: bool) -> dict[str, bytes]:
    """The slices, with header edits (pydicom) and byte mutations, under their (maybe marker) names."""
    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in seeds.dicom.values()]
    patches: list[set[str]] = [set() for _ in datasets]
    n_edits = int(rng.integers(0, 4))
    for _ in range(n_edits):
        steps.append(_dicom_edit(rng, datasets, patches))
    if rng.random() < 0.15:
        removed = int(rng.integers(len(datasets)))
        del datasets[removed], patches[removed]
        steps.append(f"drop slice {removed}")
    files = {}
    for index, ds in enumerate(datasets):
        name = f"{NAME_MARKER}_{index}.dcm" if marker_names else f"{index:04d}.dcm"
        try:
            files[name] = _dicom_bytes(ds, patches[index])
        except Exception as error:  # noqa: BLE001 - pydicom refuses to write it: keep the slice as it was
            steps.append(f"(slice {index} unwritable: {type(error).__name__}; kept unedited)")
            files[name] = list(seeds.dicom.values())[index] if index < len(seeds.dicom) else b""
    if n_edits == 0 or rng.random() < 0.3:
        names = list(files)
        name = names[int(rng.integers(len(names)))]
        files[name], step = mutate_bytes(rng, files[name], header=1200)
        steps.append(f"slice file {names.index(name)}: {step}")
    return files


def _dicom_case(rng: np.random.Generator, seeds: Seeds) -> Case:
    case = Case()
    marker_names = rng.random() < 0.5
    folder = NAME_MARKER if rng.random() < 0.5 else "study"
    case.steps.append(f"folder {folder}, {'marker' if marker_names else 'numbered'} file names")
    files = _dicom_files(rng, seeds, case.steps, marker_names)
    if rng.random() < 0.15:  # extras beside the series
        extra = _pick(rng, ("text", "empty_dcm", "non_dicom_dcm", "dicomdir_like"))
        extra_files = {"text": ("notes.txt", b"hello"), "empty_dcm": ("empty.dcm", b""),
                       "non_dicom_dcm": ("junk.dcm", b"\0" * 128 + b"DICM" + b"\xff" * 64),
                       "dicomdir_like": ("DICOMDIR", b"\0" * 128 + b"DICM")}
        name, data = extra_files[extra]
        files[name] = data
        case.steps.append(f"extra file {extra}")
    case.files = {f"{folder}/{name}": data for name, data in files.items()}
    case.target = folder
    return case


# ------------------------------------------------------------------------------------------------------------ zip
def _zip_bytes(entries: list[tuple[zipfile.ZipInfo | str, bytes]], compression: int) -> bytes:
    """A zip of ``entries`` (names or ``ZipInfo``), with a fixed date so that the bytes are the same every run."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as zf:
        warnings.simplefilter("ignore")  # duplicate names
        for entry, data in entries:
            info = entry if isinstance(entry, zipfile.ZipInfo) else zipfile.ZipInfo(entry, (2020, 1, 1, 0, 0, 0))
            info.compress_type = compression
            zf.writestr(info, data)
    return buffer.getvalue()


_WEIRD_NAMES = ("/abs.dcm", "../up.dcm", "a/../../up2.dcm", "C:/drive.dcm", "..\\win.dcm", "./dot/./x.dcm",
                "x" * 300 + ".dcm", "deep/" * 60 + "x.dcm", "nul\0byte.dcm", "sp ace/ü ñ/é.dcm", "trailing.dcm/",
                f"{NAME_MARKER}/{NAME_MARKER}.dcm", ".hidden.dcm", "a//b.dcm", "\\back\\slash.dcm", " ", ".", "/")


def _zip_case(rng: np.random.Generator, seeds: Seeds) -> Case:
    case = Case()
    steps = case.steps
    inner_steps: list[str] = []
    marker_names = rng.random() < 0.5
    if rng.random() < 0.3:  # also mutate the DICOM inside
        files = _dicom_files(rng, seeds, inner_steps, marker_names)
        steps.extend(f"inside: {step}" for step in inner_steps)
    else:
        files = {(f"{NAME_MARKER}_{i}.dcm" if marker_names else f"{i:04d}.dcm"): data
                 for i, data in enumerate(seeds.dicom.values())}
    folder = NAME_MARKER if rng.random() < 0.5 else "series"
    entries: list[tuple[zipfile.ZipInfo | str, bytes]] = [(f"{folder}/{name}", data) for name, data in files.items()]
    compression = _pick(rng, (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA))
    steps.insert(0, f"entries under {folder}/, {'marker' if marker_names else 'numbered'} names, "
                    f"compression {compression}")
    kind = _pick(rng, ("duplicate", "weird_name", "weird_name", "mixed", "two_studies", "link", "file_and_folder",
                       "central_directory", "bytes", "bytes", "flags", "none"))
    corrupt_after = None
    if kind == "duplicate":
        name, data = entries[int(rng.integers(len(entries)))]
        other = _pick(rng, (b"", data[: len(data) // 2], seeds.dicom[next(iter(seeds.dicom))]))
        entries.append((name, other))
        steps.append(f"duplicate entry {entries.index((name, data))} ({len(other)} bytes)")
    elif kind == "weird_name":
        name = _pick(rng, _WEIRD_NAMES)
        data = _pick(rng, (b"", seeds.dicom[next(iter(seeds.dicom))], b"junk"))
        entries.insert(int(rng.integers(len(entries) + 1)), (name, data))
        steps.append(f"extra entry named {name[:40]!r}{'...' if len(name) > 40 else ''} ({len(data)} bytes)")
    elif kind == "mixed":
        extra = _pick(rng, ("nifti", "nifti_gz", "mha", "text", "nested_zip"))
        name, data = {"nifti": (f"{folder}/{NAME_MARKER}.nii", seeds.nifti),
                      "nifti_gz": ("vol/sag.nii.gz", gzip.compress(seeds.nifti, mtime=0)),
                      "mha": (f"{folder}/sag.mha", seeds.mha_compressed),
                      "text": (f"{folder}/report.txt", VALUE_MARKER.encode()),
                      "nested_zip": ("inner.zip", _zip_bytes([("a.dcm", b"x")], zipfile.ZIP_STORED))}[extra]
        entries.append((name, data))
        steps.append(f"mixed: add {extra} as {name}")
    elif kind == "two_studies":
        second = _pick(rng, (f"{NAME_MARKER}_2", "other"))
        entries += [(f"{second}/{name.split('/')[-1]}", data) for name, data in list(entries)]
        entries += [(f"{second}/study.nii", seeds.nifti)] if rng.random() < 0.5 else []
        steps.append(f"the study again under {second}/")
    elif kind == "link":
        info = zipfile.ZipInfo(f"{folder}/link.dcm", (2020, 1, 1, 0, 0, 0))
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        entries.append((info, b"/etc/passwd"))
        steps.append("a symlink entry")
    elif kind == "file_and_folder":
        entries.insert(0, (folder, b"a file named like the folder"))
        steps.append("a file with the folder's name")
    elif kind in ("central_directory", "bytes", "flags"):
        corrupt_after = kind
    data = _zip_bytes(entries, compression)
    if corrupt_after == "central_directory":
        data, step = _corrupt_directory(rng, data)
        steps.append(step)
    elif corrupt_after == "bytes":
        data, step = mutate_bytes(rng, data, header=len(data))
        steps.append(f"archive bytes: {step}")
    elif corrupt_after == "flags":
        data, step = _zip_flags(rng, data)
        steps.append(step)
    stem = NAME_MARKER if rng.random() < 0.3 else "upload"
    case.target = f"{stem}.zip"
    case.files[case.target] = data
    steps.insert(0, f"file {case.target}")
    return case


def _corrupt_directory(rng: np.random.Generator, data: bytes) -> tuple[bytes, str]:
    """Damages the central directory or its end record."""
    out = bytearray(data)
    eocd = data.rindex(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", data, eocd + 12)
    what = _pick(rng, ("entries", "size", "offset", "flip", "truncate", "comment_length", "cd_names"))
    if what == "entries":
        value = _pick(rng, (0, 1, 0xFFFF, 1000))
        struct.pack_into("<HH", out, eocd + 8, value, value)
    elif what == "size":
        value = _pick(rng, (0, 1, cd_size - 1, cd_size + 46, 0xFFFFFFFF))
        struct.pack_into("<I", out, eocd + 12, value & 0xFFFFFFFF)
    elif what == "offset":
        value = _pick(rng, (0, 1, cd_offset + 1, cd_offset - 1, len(data), 0xFFFFFFFF))
        struct.pack_into("<I", out, eocd + 16, max(value, 0) & 0xFFFFFFFF)
    elif what == "flip":
        count = int(rng.integers(1, 9))
        for _ in range(count):
            out[cd_offset + int(rng.integers(max(eocd - cd_offset, 1)))] ^= int(rng.integers(1, 256))
        return bytes(out), f"central directory: flip {count} byte(s)"
    elif what == "truncate":
        at = cd_offset + int(rng.integers(max(len(data) - cd_offset, 1)))
        return data[:at], f"truncate in the central directory at {at}"
    elif what == "comment_length":
        value = _pick(rng, (1, 0xFFFF))
        struct.pack_into("<H", out, eocd + 20, value)
    else:  # rewrite a name length / extra length of the first central entry
        field_offset = _pick(rng, (28, 30, 32))
        value = _pick(rng, (0, 1, 0xFFFF))
        struct.pack_into("<H", out, cd_offset + field_offset, value)
        what = f"cd_names field +{field_offset} = {value}"
        return bytes(out), f"central directory: {what}"
    return bytes(out), f"end record: {what} = {value}"


def _zip_flags(rng: np.random.Generator, data: bytes) -> tuple[bytes, str]:
    """Sets flag bits / compression methods / sizes of the first entry (local header and central directory)."""
    out = bytearray(data)
    cd = data.rindex(b"PK\x05\x06")
    cd_offset = struct.unpack_from("<I", data, cd + 16)[0]
    what = _pick(rng, ("encrypted", "method", "size", "crc"))
    if what == "encrypted":
        for offset, field_at in ((0, 6), (cd_offset, 8)):
            flags = struct.unpack_from("<H", out, offset + field_at)[0]
            struct.pack_into("<H", out, offset + field_at, flags | 1)
        return bytes(out), "first entry flagged encrypted"
    if what == "method":
        method = _pick(rng, (1, 6, 9, 97, 98, 99, 0xFFFF))
        struct.pack_into("<H", out, 8, method)
        struct.pack_into("<H", out, cd_offset + 10, method)
        return bytes(out), f"first entry compression method {method}"
    if what == "size":
        value = _pick(rng, (0, 1, 0xFFFFFFFF, 1 << 31))
        struct.pack_into("<I", out, cd_offset + 24, value)  # uncompressed size in the central directory
        return bytes(out), f"first entry declared size {value}"
    crc = zlib.crc32(b"lies") & 0xFFFFFFFF
    struct.pack_into("<I", out, cd_offset + 16, crc)
    return bytes(out), "first entry CRC wrong"


# ------------------------------------------------------------------------------------------------------------ running
# Cases run in a worker process: a reader that crashes natively (SimpleITK on some MetaImage headers) must fail its
# case, not end the test run. The worker imports the stack once and forks a child that reads the cases one after
# the other; when a child dies or hangs, its case is recorded so and a new child goes on with the next case (a fork
# costs milliseconds, a new interpreter seconds). Each child caps its own address space, so that a header declaring
# a huge image ends in a MemoryError (a failure to report) rather than in the machine's memory.

START, RESULT = "FUZZ-START ", "FUZZ-RESULT "
ADDRESS_SPACE_HEADROOM = 3 << 30  # bytes a child may map beyond what it holds after its imports
MAX_UNPACKED_BYTES = 64 << 20
CASE_TIMEOUT_S = 30.0


def _vm_size() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _frame(tb) -> str:
    import traceback

    frames = traceback.extract_tb(tb)
    return f"{frames[-1].filename}:{frames[-1].lineno} ({frames[-1].name})" if frames else ""


def _lss_frame(tb) -> str:
    import traceback

    frames = [f for f in traceback.extract_tb(tb) if "/lss/" in f.filename.replace("\\", "/")]
    return f"{frames[-1].filename}:{frames[-1].lineno} ({frames[-1].name})" if frames else ""


def limits_argument(function, config) -> dict:
    """``{"limits": config.limits}`` when ``function`` takes the reading budget (``open_study`` does once the readers
    enforce it), else nothing."""
    import inspect

    return {"limits": config.limits} if "limits" in inspect.signature(function).parameters else {}


def run_case(fmt: str, seed: int, seeds: Seeds, folder: Path, config) -> dict:
    """Reads case ``(fmt, seed)`` as an upload is read: ``open_study``, then ``preprocess_study``.

    Returns:
        "fmt", "seed", "mutation", "outcome" ("ok", "study_error" or "exception"), "stage" (where it ended:
        "open_study" or "preprocess"), "seconds", "rss_growth_mb" (growth of this process's peak RSS); for a
        ``StudyError`` "code", "message" and, when it wraps another exception, "cause" and "cause_traceback"; for
        any other exception "exception", "message", "top_frame" (innermost file:line), "lss_frame" (innermost
        frame in ``lss``) and "traceback".
    """
    import resource
    import time
    import traceback

    from lss.data.errors import StudyError
    from lss.inference.study_input import open_study
    from lss.preprocessing.transforms import preprocess_study

    case = make_case(fmt, seed, seeds)
    target = case.write(folder / "in")
    out: dict = {"fmt": fmt, "seed": seed, "mutation": case.mutation, "stage": "open_study"}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = open_study(target, workdir=folder / "work", max_unpacked_bytes=MAX_UNPACKED_BYTES,
                                **limits_argument(open_study, config))
            out["stage"] = "preprocess"
            preprocess_study(record, config)
        out["outcome"] = "ok"
    except StudyError as error:
        out.update(outcome="study_error", code=error.code.value, message=str(error.message))
        if error.__cause__ is not None:
            out.update(cause=type(error.__cause__).__name__, cause_frame=_frame(error.__cause__.__traceback__),
                       cause_traceback="".join(traceback.format_exception(error.__cause__))[-4000:])
    except Exception as error:  # noqa: BLE001 - anything but a StudyError is what the fuzz looks for
        out.update(outcome="exception", exception=f"{type(error).__module__}.{type(error).__qualname__}",
                   message=str(error)[:500], top_frame=_frame(error.__traceback__),
                   lss_frame=_lss_frame(error.__traceback__), traceback=traceback.format_exc()[-4000:])
    out["seconds"] = round(time.perf_counter() - started, 3)
    out["rss_growth_mb"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, 1)
    return out


def fuzz_config():
    """The preprocessing settings of the fuzz: the defaults, with a small reading budget."""
    from lss.config import InputLimits, PreprocessConfig

    # Limits well under the defaults: a header that declares a huge image is refused (or, where a reader does not
    # enforce them, at least allocates less before the address space cap turns it into a MemoryError).
    return PreprocessConfig(limits=InputLimits(max_voxels=2_000_000, max_decoded_mb=64,
                                               max_resampled_voxels=8_000_000))


def _cap_address_space() -> None:
    import resource

    size = _vm_size()
    if size is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = size + ADDRESS_SPACE_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def _child(cases: list[tuple[str, int]], root: Path, out) -> None:
    """Reads ``cases`` in order in this (forked) process, one ``START`` and one ``RESULT`` line each on ``out``."""
    import json
    import shutil

    seeds = seed_inputs(root / "seeds")
    config = fuzz_config()
    _cap_address_space()
    for fmt, seed in cases:
        folder = root / f"{fmt}_{seed}"
        mutation = make_case(fmt, seed, seeds).mutation
        out.write(START + json.dumps({"fmt": fmt, "seed": seed, "mutation": mutation}) + "\n")
        out.flush()
        result = run_case(fmt, seed, seeds, folder, config)
        out.write(RESULT + json.dumps(result) + "\n")
        out.flush()
        shutil.rmtree(folder, ignore_errors=True)


def worker_main(workdir: str, items: list[str], case_timeout_s: float = CASE_TIMEOUT_S) -> None:
    """The worker: reads the cases ``"fmt:seed"`` in forked children and prints one ``RESULT`` line (JSON) per
    case on stdout, a case whose child died or hung included (outcome "died" / "hung")."""
    import json
    import os
    import select
    import signal
    import time

    # What the cases use, imported once, before the children are forked (no thread pool is started here).
    import monai.transforms  # noqa: F401
    import SimpleITK  # noqa: F401
    import torch  # noqa: F401

    import lss.inference.study_input  # noqa: F401
    import lss.preprocessing.transforms  # noqa: F401

    root = Path(workdir)
    mutations: dict[tuple[str, int], str] = {}
    pending = [(fmt, int(seed)) for fmt, seed in (item.split(":") for item in items)]
    child_number = 0
    while pending:
        child_number += 1
        folder = root / f"child{child_number}"
        folder.mkdir(parents=True)
        stderr_path = folder / "stderr.txt"
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: stderr to its own file, results to the pipe, never back into the caller's code
            code = 0
            try:
                os.close(read_end)
                with open(stderr_path, "wb") as stderr:
                    os.dup2(stderr.fileno(), 2)
                with os.fdopen(write_end, "w") as out:
                    _child(pending, folder, out)
            except BaseException:  # noqa: BLE001 - reported by the parent as the death of the current case
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        current, buffer, hung = None, b"", False
        deadline = time.monotonic() + case_timeout_s + 60.0  # the first case also builds the seeds
        with os.fdopen(read_end, "rb") as stream:
            while True:
                ready, _, _ = select.select([stream], [], [], max(deadline - time.monotonic(), 0.0))
                if not ready:
                    hung = True
                    os.kill(pid, signal.SIGKILL)
                    break
                chunk = os.read(stream.fileno(), 1 << 16)
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode()
                    if line.startswith(START):
                        started = json.loads(line[len(START):])
                        current = (started["fmt"], started["seed"])
                        mutations[current] = started["mutation"]
                        deadline = time.monotonic() + case_timeout_s
                    elif line.startswith(RESULT):
                        print(line, flush=True)
                        pending.remove(current)
                        current = None
        _, status = os.waitpid(pid, 0)
        if current is None:
            if pending:  # it failed (or hung) outside any case: building the seeds, say
                raise RuntimeError(f"a fuzz worker child ended with status {status}, outside any case:\n"
                                   + stderr_path.read_text(errors="replace")[-4000:])
            continue
        if os.WIFSIGNALED(status):
            how = f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        else:
            how = f"exit status {os.WEXITSTATUS(status)}"
        result = {"fmt": current[0], "seed": current[1], "mutation": mutations[current],
                  "outcome": "hung" if hung else "died",
                  "message": f"no result within {case_timeout_s:.0f} s" if hung else f"the process died: {how}",
                  "stderr": stderr_path.read_text(errors="replace")[-2000:]}
        print(RESULT + json.dumps(result), flush=True)
        pending.remove(current)


def run_in_workers(cases: list[tuple[str, int]], workdir: Path, *,
                   case_timeout_s: float = CASE_TIMEOUT_S) -> dict[tuple[str, int], dict]:
    """Runs ``cases`` in a worker process (``worker_main``) and returns each case's result (see ``run_case``; a
    case whose process died or hung has the outcome "died" or "hung", a "message" saying how and the end of its
    "stderr").

    Raises:
        RuntimeError: when the worker fails (it could not start, or ended with cases left).
    """
    import json
    import subprocess
    import sys

    if not cases:
        return {}
    workdir.mkdir(parents=True, exist_ok=True)
    stderr_path = workdir / "worker_stderr.txt"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", str(workdir), str(case_timeout_s),
             *(f"{fmt}:{seed}" for fmt, seed in cases)],
            stdout=subprocess.PIPE, stderr=stderr, text=True, check=False,
        )
    results = {}
    for line in process.stdout.splitlines():
        if line.startswith(RESULT):
            result = json.loads(line[len(RESULT):])
            results[(result["fmt"], result["seed"])] = result
    missing = [case for case in cases if case not in results]
    if process.returncode != 0 or missing:
        raise RuntimeError(f"the fuzz worker exited with {process.returncode}, {len(missing)} case(s) left:\n"
                           + stderr_path.read_text(errors="replace")[-4000:])
    return results


def _main(argv: list[str]) -> None:
    """``helpers_fuzz.py --worker WORKDIR fmt:seed ...`` (used by ``run_in_workers``), or, to reproduce a case by
    hand, ``helpers_fuzz.py FOLDER fmt:seed ...``: writes each case's files under ``FOLDER/fmt_seed/in``, reads it in
    this process and prints the result."""
    import json
    import sys

    if argv and argv[0] == "--worker":
        worker_main(argv[1], argv[3:], float(argv[2]))
        return
    if not argv:
        sys.exit(__doc__)
    root = Path(argv[0])
    seeds = seed_inputs(root / "seeds")
    config = fuzz_config()
    for item in argv[1:]:
        fmt, seed = item.split(":")
        result = run_case(fmt, int(seed), seeds, root / f"{fmt}_{seed}", config)
        print(json.dumps({k: v for k, v in result.items() if "traceback" not in k}, indent=1))
        for key in ("traceback", "cause_traceback"):
            if key in result:
                print(result[key])


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])


def valid_case(fmt: str, seeds: Seeds) -> Case:
    """The unmutated upload of format ``fmt`` (with ``NAME_MARKER`` names): what every mutation starts from."""
    dicom = {f"{NAME_MARKER}/{NAME_MARKER}_{i}.dcm": data for i, data in enumerate(seeds.dicom.values())}
    if fmt == "dicom":
        return Case(dicom, NAME_MARKER)
    if fmt == "zip":
        return Case({"upload.zip": _zip_bytes(list(dicom.items()), zipfile.ZIP_DEFLATED)}, "upload.zip")
    if fmt == "nifti":
        return Case({f"{NAME_MARKER}.nii.gz": gzip.compress(seeds.nifti, mtime=0)}, f"{NAME_MARKER}.nii.gz")
    return Case({f"{NAME_MARKER}.mha": seeds.mha_compressed}, f"{NAME_MARKER}.mha")
