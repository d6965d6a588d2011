"""DICOM Segmentation (SEG) instances of a diagnosis' predicted masks, on the model's own grid.

The masks of a ``StudyPrediction`` live on the preprocessed grid (reoriented to RAS, resampled, cropped), not on the
source DICOM grid. A SEG can say so: its frames carry their own plane position, orientation and pixel spacing
(``plane_positions``, ``plane_orientation``, ``pixel_measures`` of ``highdicom.seg.Segmentation``), in the source's
frame of reference, so a viewer places them in patient space without resampling anything here. highdicom still
links each frame to the source images that lie in the same plane, where there are any.

One SEG per source series (per stack of a multi-stack series), as DICOM expects a SEG's source images to share one
series and one orientation:

- ``seg_sagittal``: the mid-sagittal slice of the sagittal crop (``prediction.sagittal_mask``), referencing the
  sagittal series;
- ``seg_axial_<level>`` (e.g. ``seg_axial_l4_l5``): the centre axial slice of each level that had axial images
  (``prediction.axial_masks[level]``), referencing the axial series (or stack) it was read from. Levels of one study
  usually come from different series or differently angled stacks, whose planes cannot share one SEG's orientation.

Each SEG is BINARY with one segment per foreground structure (segment number = ``lss.anatomy.Structure`` index:
1 vertebral bodies, 2 posterior elements, 3 intervertebral discs, 4 spinal canal) and every frame kept, empty or not,
so that segment ``s`` of plane ``p`` is always frame ``p * len(STRUCTURES) + s`` (1-based). The 2D mask is the
frame as is: frame rows follow the mask's first axis and frame columns its second (sagittal: Y posterior ->
anterior, Z inferior -> superior; axial: H left -> right, W posterior -> anterior, as ``lss.inference.StudyPrediction``
documents them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from numpy.typing import ArrayLike
from pydicom.dataset import Dataset

from lss.anatomy import LEVELS, Structure, level_key, parse_level
from lss.colours import STRUCTURE_COLOURS, rgb255
from lss.data.volume import LPS_TO_RAS
from lss.export.codes import ANATOMICAL_STRUCTURE, LSS_CODING_SCHEME, SEGMENT_LABELS, SEGMENT_TYPES
from lss.export.identity import MANUFACTURER, MODEL_NAME, SEG_SERIES_NUMBER, OutputIdentity
from lss.export.sources import DicomSources, NotDicomError

__all__ = [
    "PlaneGeometry",
    "STRUCTURES",
    "build_segmentation",
    "build_sagittal_seg",
    "build_axial_seg",
    "sagittal_plane",
    "axial_plane",
    "axial_seg_name",
    "segment_frame_number",
]

# The segmented structures, in segment-number order (segment number = Structure.index).
STRUCTURES: tuple[Structure, ...] = tuple(s for s in Structure if s is not Structure.BACKGROUND)

# Display colours (RGB 0-255): the evidence images' overlay colours (``lss.colours``).
_COLOURS: dict[Structure, tuple[int, int, int]] = {s: rgb255(STRUCTURE_COLOURS[s.index]) for s in STRUCTURES}


@dataclass(frozen=True)
class PlaneGeometry:
    """Where a 2D mask lies in patient space, in DICOM terms (LPS, mm).

    Attributes:
        position: (3,) ImagePositionPatient: the centre of pixel (0, 0).
        orientation: (6,) ImageOrientationPatient: the direction of increasing column index (along a row), then the
            direction of increasing row index (along a column).
        pixel_spacing: (2,) PixelSpacing: mm between rows, mm between columns.
        thickness: mm along the plane normal (the voxel size of the grid the mask was cut from).
    """

    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    thickness: float

    @classmethod
    def from_affine(cls, affine_ras: ArrayLike, row_axis: int, column_axis: int,
                    origin_voxel: ArrayLike) -> PlaneGeometry:
        """The plane of a 3D grid spanned by two of its voxel axes.

        Args:
            affine_ras: (4, 4) voxel -> RAS mm affine of the grid.
            row_axis: the voxel axis along which the mask's row index (first axis) runs.
            column_axis: the voxel axis along which the mask's column index (second axis) runs.
            origin_voxel: (3,) voxel coordinates of mask pixel (0, 0).

        Raises:
            ValueError: for an affine that is not 4 x 4 and finite, equal or out-of-range axes, a zero-length axis, or
                row and column axes that are not orthogonal (DICOM cannot store that).
        """
        affine = np.asarray(affine_ras, dtype=np.float64)
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"affine_ras must be a finite (4, 4) array, got shape {affine.shape}.")
        if {row_axis, column_axis} - {0, 1, 2} or row_axis == column_axis:
            raise ValueError(f"row_axis and column_axis must be two different axes of 0, 1, 2; got {row_axis}, "
                             f"{column_axis}.")
        origin = np.asarray(origin_voxel, dtype=np.float64).reshape(-1)
        if origin.shape != (3,):
            raise ValueError(f"origin_voxel must hold 3 voxel coordinates, got {origin_voxel!r}.")
        lps = LPS_TO_RAS @ affine  # the flip is its own inverse: RAS -> LPS
        row_step, column_step = lps[:3, row_axis], lps[:3, column_axis]
        row_mm, column_mm = float(np.linalg.norm(row_step)), float(np.linalg.norm(column_step))
        if min(row_mm, column_mm) <= 0:
            raise ValueError("the affine has a zero-length voxel axis.")
        along_row, along_column = column_step / column_mm, row_step / row_mm
        if abs(float(along_row @ along_column)) > 1e-4:
            raise ValueError(f"the mask's row and column axes are not orthogonal (cosine "
                             f"{float(along_row @ along_column):.6f}); DICOM cannot store that plane.")
        normal_axis = ({0, 1, 2} - {row_axis, column_axis}).pop()
        position = (lps @ np.append(origin, 1.0))[:3]
        return cls(position=tuple(float(v) for v in position),
                   orientation=tuple(float(v) for v in (*along_row, *along_column)),
                   pixel_spacing=(row_mm, column_mm),
                   thickness=float(np.linalg.norm(lps[:3, normal_axis])))

    def pixel_to_lps(self, row: float, column: float) -> np.ndarray:
        """The LPS position (mm) of a pixel centre."""
        orientation = np.asarray(self.orientation)
        return (np.asarray(self.position) + column * self.pixel_spacing[1] * orientation[:3]
                + row * self.pixel_spacing[0] * orientation[3:])


def sagittal_plane(prediction) -> PlaneGeometry:
    """The plane of ``prediction.sagittal_mask``: voxel axes Y (rows) and Z (columns) of the sagittal crop at
    X = ``prediction.sagittal_slice``."""
    return PlaneGeometry.from_affine(prediction.sagittal_affine, 1, 2, (prediction.sagittal_slice, 0, 0))


def axial_plane(prediction, level: str, axial_slices: int) -> PlaneGeometry:
    """The plane of ``prediction.axial_masks`` of one level: voxel axes H (rows) and W (columns) of the level's axial
    crop at its centre slice.

    Args:
        prediction: a ``lss.inference.StudyPrediction``.
        level: e.g. "L4/L5".
        axial_slices: slices per level of the axial crops the model read (``PreprocessConfig.axial_slices``); the
            mask is of the centre one, ``axial_slices // 2``.

    Raises:
        ValueError: for an unknown level, a level without axial data, or ``axial_slices`` < 1.
    """
    index = _level_index(level)
    if not bool(prediction.axial_present[index]):
        raise ValueError(f"level {level} has no axial data, so no axial mask.")
    if int(axial_slices) < 1:
        raise ValueError(f"axial_slices must be at least 1, got {axial_slices!r}.")
    return PlaneGeometry.from_affine(prediction.axial_affines[index], 0, 1, (0, 0, int(axial_slices) // 2))


def axial_seg_name(level: str) -> str:
    """The output name of a level's axial SEG: "L4/L5" -> "seg_axial_l4_l5"."""
    return f"seg_axial_{level_key(level)}"


def segment_frame_number(structure: Structure, plane: int = 0) -> int:
    """The 1-based frame number of a structure's segment on a plane of a SEG built here."""
    if structure not in STRUCTURES:
        raise ValueError(f"{structure!r} is not a segmented structure; expected one of {STRUCTURES}.")
    return plane * len(STRUCTURES) + STRUCTURES.index(structure) + 1


def _level_index(level: str) -> int:
    key = parse_level(level)
    if key not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}.")
    return LEVELS.index(key)


def _segment_descriptions(identity: OutputIdentity) -> list[hd.seg.SegmentDescription]:
    return [
        hd.seg.SegmentDescription(
            segment_number=structure.index,
            segment_label=SEGMENT_LABELS[structure],
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=SEGMENT_TYPES[structure],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identity.seg_algorithm(),
            display_color=hd.color.CIELabColor.from_rgb(*_COLOURS[structure]),
        )
        for structure in STRUCTURES
    ]


def build_segmentation(mask: ArrayLike, plane: PlaneGeometry, source_images: Sequence[Dataset], *,
                       identity: OutputIdentity, name: str, instance_number: int,
                       content_label: str, content_description: str) -> hd.seg.Segmentation:
    """One BINARY SEG of a 2D structure mask lying on ``plane``.

    Args:
        mask: (rows, columns) int structure indices (``lss.anatomy.Structure``: 0 background .. 4 spinal canal).
        plane: where the mask lies (LPS).
        source_images: de-identified headers of the source series (or stack) the mask was derived from; they give
            the SEG its study, patient module (empty) and frame of reference.
        identity: the diagnosis' UIDs and algorithm identification.
        name: the output name (its SOPInstanceUID is ``identity.uid(name)``).
        instance_number: InstanceNumber within the SEG series.
        content_label: ContentLabel (upper case, at most 16 characters).
        content_description: ContentDescription.

    Returns:
        The SEG: ``len(STRUCTURES)`` frames, segment ``s`` in frame ``s`` (1-based), empty ones included.

    Raises:
        ValueError: for a mask that is not 2D or holds values outside 0..len(STRUCTURES), or no source images.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty 2D (rows, columns) array, got shape {mask.shape}.")
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integer structure indices, got dtype {mask.dtype}.")
    if mask.min() < 0 or mask.max() > len(STRUCTURES):
        raise ValueError(f"mask values must be structure indices 0..{len(STRUCTURES)}, got "
                         f"{int(mask.min())}..{int(mask.max())}.")
    if not source_images:
        raise ValueError("a SEG needs at least one source image.")
    return hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=mask[None].astype(np.uint8),  # label-map style: value s -> segment s
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segment_descriptions(identity),
        series_instance_uid=identity.seg_series_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=identity.uid(name),
        instance_number=int(instance_number),
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=identity.software_versions,
        device_serial_number=identity.serial_number,
        content_label=content_label,
        content_description=content_description,
        series_description="LSS AI segmentation",
        plane_orientation=hd.PlaneOrientationSequence("PATIENT", list(plane.orientation)),
        plane_positions=[hd.PlanePositionSequence("PATIENT", list(plane.position))],
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=list(plane.pixel_spacing),
                                                slice_thickness=plane.thickness,
                                                spacing_between_slices=plane.thickness),
        omit_empty_frames=False,
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        coding_schemes=[LSS_CODING_SCHEME],
    )


def build_sagittal_seg(prediction, sources: DicomSources, identity: OutputIdentity) -> hd.seg.Segmentation:
    """The SEG of the predicted mid-sagittal mask, referencing the sagittal series.

    Args:
        prediction: a ``lss.inference.StudyPrediction``.
        sources: the study's de-identified DICOM headers.
        identity: the diagnosis' UIDs.

    Raises:
        NotDicomError: when the sagittal series has no DICOM headers.
    """
    return build_segmentation(
        prediction.sagittal_mask, sagittal_plane(prediction), sources.headers(sources.sagittal_series),
        identity=identity, name="seg_sagittal", instance_number=1, content_label="SAGITTAL",
        content_description="LSS mid-sagittal segmentation (model grid)")


def build_axial_seg(prediction, level: str, sources: DicomSources, identity: OutputIdentity,
                    axial_slices: int) -> hd.seg.Segmentation:
    """The SEG of one level's predicted axial mask, referencing the axial series (or stack) it was read from.

    Args:
        prediction: a ``lss.inference.StudyPrediction``.
        level: e.g. "L4/L5"; must have axial data.
        sources: the study's de-identified DICOM headers.
        identity: the diagnosis' UIDs.
        axial_slices: slices per level of the axial crops (the mask is the centre one).

    Raises:
        ValueError: for an unknown level or one without axial data.
        NotDicomError: when the level's axial series has no DICOM headers.
    """
    index = _level_index(level)
    plane = axial_plane(prediction, LEVELS[index], axial_slices)
    series_id = ((prediction.info or {}).get("axial", {}).get(LEVELS[index]) or {}).get("series")
    if series_id is None:
        raise NotDicomError(f"level {LEVELS[index]}: the prediction does not say which axial series it read.")
    key = level_key(LEVELS[index]).upper()
    return build_segmentation(
        prediction.axial_masks[index], plane, sources.headers(series_id), identity=identity,
        name=axial_seg_name(LEVELS[index]), instance_number=2 + index, content_label=f"AXIAL_{key}",
        content_description=f"LSS axial segmentation at {LEVELS[index]} (model grid)")
