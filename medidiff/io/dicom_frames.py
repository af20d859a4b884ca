"""DICOM frames -> a position-sorted stack (single-frame series and multi-frame files alike).

Why not MONAI's own stacking (``PydicomReader._combine_dicom_series``):

- it sorts slices by InstanceNumber, which scanners and anonymisers do not always keep in spatial order,
  and drops slices without one; medidiff sorts by the position along the slice normal;
- it measures the slice spacing from the z coordinate only, which is wrong for sagittal, coronal and
  oblique series, and does not notice missing slices or slices with different orientations;
- a multi-frame file is reshaped as if it were one 2D slice (its frame axis gets swapped with the rows)
  and its geometry, stored per frame in functional groups, is ignored (identity affine).

Each frame is described by its plane geometry and rescale; :func:`order_frames` sorts and groups them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medidiff.errors import InputError

# Relative tolerance on slice spacing: a missing slice doubles one gap, far beyond it.
_SPACING_TOLERANCE = 0.1
_POSITION_TOLERANCE_MM = 1e-3


@dataclass
class Frame:
    """One 2D image plane.

    Attributes:
        load: returns the stored pixels, (Rows, Columns).
        position: ImagePositionPatient (3,), LPS mm, of the first transmitted pixel.
        orientation: ImageOrientationPatient (6,): row then column direction cosines, LPS.
        pixel_spacing: PixelSpacing (2,): [between rows, between columns] in mm.
        slope: RescaleSlope.
        intercept: RescaleIntercept.
        order: tie-breaker among frames at one position (time, echo, instance number).
        shape: (Rows, Columns).
        stored_range: (min, max) of representable stored values (BitsStored, PixelRepresentation).
    """

    load: Callable[[], np.ndarray]
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray
    slope: float
    intercept: float
    order: tuple[float, ...]
    shape: tuple[int, int]
    stored_range: tuple[int, int]


def _floats(value: Any, n: int, what: str, source: str) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: unreadable {what} {value!r}") from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise InputError(f"{source}: invalid {what} {value!r}")
    return arr


def _stored_range(ds: Any) -> tuple[int, int]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _check_grayscale(ds: Any, source: str) -> None:
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InputError(f"{source}: colour DICOM images are not supported (SamplesPerPixel > 1)")


def _order_key(ds: Any, extra: float = 0.0) -> tuple[float, ...]:
    def num(keyword: str) -> float:
        value = ds.get(keyword)
        try:
            return float(value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value)
        except (TypeError, ValueError, IndexError):
            return 0.0

    return (
        num("TemporalPositionIdentifier"),
        num("AcquisitionNumber"),
        num("EchoNumbers"),
        num("TriggerTime"),
        extra,
        num("InstanceNumber"),
    )


def _pixels_of(ds: Any) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return np.asarray(ds.pixel_array)

    return load


def frames_from_series(datasets: Sequence[Any], sources: Sequence[str]) -> list[Frame]:
    """Frames of a series of single-frame DICOM datasets (pixels read lazily).

    Raises:
        InputError: a slice lacks ImagePositionPatient/ImageOrientationPatient or is colour.
    """
    frames = []
    for ds, source in zip(datasets, sources, strict=True):
        _check_grayscale(ds, source)
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise InputError(
                f"{source}: slice has no ImagePositionPatient/ImageOrientationPatient; cannot place it"
            )
        frames.append(
            Frame(
                load=_pixels_of(ds),
                position=_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", source),
                orientation=_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", source),
                pixel_spacing=_floats(ds.get("PixelSpacing", [1.0, 1.0]), 2, "PixelSpacing", source),
                slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
                intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
                order=_order_key(ds),
                shape=(int(ds.Rows), int(ds.Columns)),
                stored_range=_stored_range(ds),
            )
        )
    return frames


def _functional_item(ds: Any, index: int, keyword: str) -> Any | None:
    """Item 0 of sequence ``keyword`` for frame ``index``: per-frame groups first, then shared ones."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    for groups in (per_frame[index] if per_frame else None, shared[0] if shared else None):
        sequence = groups.get(keyword) if groups is not None else None
        if sequence:
            return sequence[0]
    return None


def frames_from_multiframe(ds: Any, source: str) -> list[Frame]:
    """Frames of one multi-frame DICOM dataset (enhanced functional groups, or legacy frame offsets).

    Raises:
        InputError: the file carries no plane geometry for its frames, or is colour.
    """
    _check_grayscale(ds, source)
    n_frames = int(ds.get("NumberOfFrames", 1))
    cache: dict[str, np.ndarray] = {}

    def loader(index: int) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            if "all" not in cache:
                pixels = ds.pixel_array
                cache["all"] = pixels.reshape((n_frames, *pixels.shape[-2:]))
            return cache["all"][index]

        return load

    shape = (int(ds.Rows), int(ds.Columns))
    frames = []
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        for i in range(n_frames):
            plane_pos = _functional_item(ds, i, "PlanePositionSequence")
            plane_ori = _functional_item(ds, i, "PlaneOrientationSequence")
            if plane_pos is None or plane_ori is None:
                raise InputError(f"{source}: no plane position/orientation for frame {i + 1}")
            measures = _functional_item(ds, i, "PixelMeasuresSequence")
            transform = _functional_item(ds, i, "PixelValueTransformationSequence")
            transform = transform if transform is not None else {}
            content = _functional_item(ds, i, "FrameContentSequence")
            temporal = float(content.get("TemporalPositionIndex", 0) or 0) if content is not None else 0.0
            spacing = measures.PixelSpacing if measures is not None else [1.0, 1.0]
            frames.append(
                Frame(
                    load=loader(i),
                    position=_floats(plane_pos.ImagePositionPatient, 3, "ImagePositionPatient", source),
                    orientation=_floats(plane_ori.ImageOrientationPatient, 6, "ImageOrientation", source),
                    pixel_spacing=_floats(spacing, 2, "PixelSpacing", source),
                    slope=float(transform.get("RescaleSlope", 1.0) or 1.0),
                    intercept=float(transform.get("RescaleIntercept", 0.0) or 0.0),
                    order=(temporal, float(i)),
                    shape=shape,
                    stored_range=_stored_range(ds),
                )
            )
        return frames
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        raise InputError(f"{source}: multi-frame file carries no plane geometry (position/orientation)")
    position = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", source)
    orientation = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", source)
    normal = np.cross(orientation[:3], orientation[3:])
    if "GridFrameOffsetVector" in ds:  # RT Dose: offsets along the normal, relative to the first frame
        offsets = _floats(ds.GridFrameOffsetVector, n_frames, "GridFrameOffsetVector", source)
    else:
        step = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
        if step is None:
            raise InputError(f"{source}: multi-frame file has no frame spacing (SpacingBetweenSlices)")
        offsets = np.arange(n_frames) * float(step)
    for i in range(n_frames):
        frames.append(
            Frame(
                load=loader(i),
                position=position + (offsets[i] - offsets[0]) * normal,
                orientation=orientation,
                pixel_spacing=_floats(ds.get("PixelSpacing", [1.0, 1.0]), 2, "PixelSpacing", source),
                slope=float(ds.get("RescaleSlope", 1.0) or 1.0),
                intercept=float(ds.get("RescaleIntercept", 0.0) or 0.0),
                order=(float(i),),
                shape=shape,
                stored_range=_stored_range(ds),
            )
        )
    return frames


def order_frames(frames: Sequence[Frame], label: str) -> list[list[Frame]]:
    """Sort frames along the slice normal and group repeated positions into volumes.

    Args:
        frames: the frames of one series or one multi-frame file.
        label: names the input in error messages.

    Returns:
        ``volumes[t][k]``: T volumes (T > 1 for a 4D series: several frames per position) of K slices each,
        slices in increasing position along the normal of the first frame's orientation.

    Raises:
        InputError: a single frame (2D), mixed orientations, in-plane sizes or spacings, an uneven number of
            frames per position, or non-uniform slice spacing (missing slices).
    """
    if len(frames) < 2:
        raise InputError(f"{label} is a 2D image (one slice); medidiff needs a 3D volume")
    first = frames[0]
    for frame in frames[1:]:
        if not np.allclose(frame.orientation, first.orientation, atol=1e-4):
            raise InputError(
                f"{label}: slices have different orientations; cannot stack them into one volume"
            )
        if frame.shape != first.shape or not np.allclose(frame.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise InputError(f"{label}: slices have different sizes or pixel spacings")
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    distances = np.array([float(np.dot(f.position, normal)) for f in frames])
    order = np.argsort(distances, kind="stable")
    groups: list[list[Frame]] = []
    group_distance: list[float] = []
    for index in order:
        if groups and abs(distances[index] - group_distance[-1]) <= _POSITION_TOLERANCE_MM:
            groups[-1].append(frames[index])
        else:
            groups.append([frames[index]])
            group_distance.append(float(distances[index]))
    counts = {len(g) for g in groups}
    if len(counts) != 1:
        raise InputError(f"{label}: positions repeat unevenly ({sorted(counts)} frames per position)")
    if len(groups) < 2:
        raise InputError(f"{label} is a 2D image (all frames at one position); medidiff needs a 3D volume")
    gaps = np.diff(np.asarray(group_distance))
    if gaps.max() - gaps.min() > _SPACING_TOLERANCE * gaps.mean():
        raise InputError(
            f"{label}: slice spacing varies ({gaps.min():.3g} to {gaps.max():.3g} mm); missing slices?"
        )
    n_volumes = counts.pop()
    for group in groups:
        group.sort(key=lambda f: f.order)
    return [[group[t] for group in groups] for t in range(n_volumes)]


def rescaled_dtype(frames: Sequence[Frame], stored_dtype: np.dtype) -> np.dtype:
    """The dtype that holds the rescaled values of ``frames`` exactly, as SimpleITK/GDCM choose it.

    Without a rescale it is the stored dtype; with integer slope and intercept, the smallest integer type
    holding the rescaled stored range; otherwise float32.
    """
    if all(f.slope == 1.0 and f.intercept == 0.0 for f in frames):
        return np.dtype(stored_dtype)
    if not all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames):
        return np.dtype(np.float32)
    ends = [f.slope * v + f.intercept for f in frames for v in f.stored_range]
    lo, hi = min(ends), max(ends)
    for candidate in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64):
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float64)


def stack_frames(volume: Sequence[Frame], dtype: np.dtype) -> np.ndarray:
    """Rescaled pixels of one volume's slices, (Rows, Columns, K), in ``dtype``."""
    out = np.empty((*volume[0].shape, len(volume)), dtype=dtype)
    for k, frame in enumerate(volume):
        pixels = frame.load()
        if frame.slope == 1.0 and frame.intercept == 0.0:
            out[..., k] = pixels
        else:
            out[..., k] = (pixels.astype(np.float64) * frame.slope + frame.intercept).astype(dtype)
    return out
