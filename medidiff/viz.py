"""PNG montages of 3D volumes: a reference and other volumes side by side in three orthogonal views, with
error maps below. Used by ``make demo`` (medidiff/demo.py) and by the benchmark (one montage per case).

Layout (one column per panel, readable at a glance)::

                 reference  degraded  medidiff  bm4d  ...  [uncertainty]
    axial        image      image     image     image
    coronal      ...
    sagittal     ...
    |error| ax.  (mask)     error     error     error
    |error| cor.
    |error| sag.

* Images share one grey window: the reference's 0.5-99.5th percentiles, so brightness is comparable.
* Error maps show |panel - reference| on a fixed scale from 0 to a quarter of that window (hot colours);
  the reference column shows the missing-voxel mask instead, when there is one.
* Colour panels (a posterior std, a difference map) are drawn in hot colours from 0 to their own 99.9th
  percentile, and have no error map.
* Column titles may carry subtitles (scores, several lines); slices pass through the missing region when
  there is one, else through the centre of the foreground.
* Volumes are turned to the nearest RAS orientation and drawn with their physical aspect ratio: x grows
  towards the subject's right (neurological convention) or anterior (sagittal); superior/anterior are up.

Built on Pillow only (its bundled font), so montages need no plotting library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

PANEL_PX = 170  # longest physical side of a view, in pixels
MIN_SIDE_PX = 64  # shortest side wanted for thin slabs ...
MAX_PANEL_PX = 260  # ... without letting the longest side grow beyond this
ERROR_FRACTION = 0.25  # error maps span 0 .. this fraction of the grey window
VIEWS = ("axial", "coronal", "sagittal")


@dataclass
class Panel:
    """One column of a montage.

    Attributes:
        title: the column's title line.
        volume: (I, J, K) array on the reference's grid.
        subtitle: text under the title (scores); may hold several lines.
        error: draw its error map (|volume - reference|) in the error rows.
        colour: hot colours from 0 to its 99.9th percentile (a std or difference map) instead of the grey
            window; a colour panel has no error map.
    """

    title: str
    volume: np.ndarray
    subtitle: str = ""
    error: bool = True
    colour: bool = False


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient to the closest RAS axes.

    Args:
        data: (I, J, K) array.
        affine: its (4, 4) voxel -> world transform.

    Returns:
        The reoriented (X, Y, Z) array (a view, no interpolation) and its (3,) voxel sizes in mm.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)[ornt[:, 0].astype(int)]
    return nib.orientations.apply_orientation(data, ornt), spacing


def hot(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] (clipped) -> (H, W, 3) uint8 colours, black -> red -> yellow -> white."""
    v = np.clip(values, 0.0, 1.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255).astype(np.uint8)


def _slices(volume: np.ndarray, index: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """The three views as 2D arrays in display order (rows top to bottom, columns left to right)."""
    i, j, k = index
    return {
        "axial": volume[:, :, k].T[::-1],  # x = R, up = A
        "coronal": volume[:, j, :].T[::-1],  # x = R, up = S
        "sagittal": volume[i, :, :].T[::-1],  # x = A, up = S
    }


def choose_slices(
    shape: tuple[int, ...], missing: np.ndarray | None, foreground: np.ndarray
) -> tuple[int, int, int]:
    """Per axis: the slice through the most missing foreground voxels (so holes show), else the centre of
    the foreground's bounding box.

    Args:
        shape: the volume's (I, J, K) shape.
        missing: (I, J, K) bool missing voxels, or None.
        foreground: (I, J, K) bool foreground.

    Returns:
        The (i, j, k) indices of the sagittal, coronal and axial slices.
    """
    index = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        inside = None if missing is None else missing & foreground
        counts = None if inside is None else inside.sum(axis=others)
        if counts is not None and missing is not None:
            # A wholly missing slice would win along its own axis and show nothing but the fill value.
            counts = np.where(missing.all(axis=others), 0, counts)
        if counts is not None and counts.max() > 0:
            index.append(int(np.argmax(counts)))
        else:
            hits = np.flatnonzero(foreground.any(axis=others))
            index.append(int((hits[0] + hits[-1]) // 2) if len(hits) else shape[axis] // 2)
    return index[0], index[1], index[2]


def _to_image(plane: np.ndarray, size: tuple[int, int], colour: bool, low: float, high: float) -> Image.Image:
    from PIL import Image

    scaled = (plane - low) / max(high - low, 1e-12)
    pixels = hot(scaled) if colour else (np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    upscale = size[0] >= plane.shape[1]
    return image.resize(size, Image.Resampling.NEAREST if upscale else Image.Resampling.LANCZOS)


def render(
    reference: np.ndarray,
    affine: np.ndarray,
    panels: list[Panel],
    title: str,
    missing: np.ndarray | None = None,
    foreground: np.ndarray | None = None,
    reference_title: str = "reference",
) -> Image.Image:
    """Draw the montage (see the module docstring for the layout).

    Args:
        reference: (I, J, K) clean volume (first column; the grey window and the error maps' zero).
        affine: its (4, 4) voxel -> world transform (for orientation and aspect ratio).
        panels: the other columns (degraded input, each method, optional uncertainty), on its grid.
        title: the header line.
        missing: (I, J, K) bool missing voxels (slice choice and the reference's error-row mask).
        foreground: (I, J, K) bool foreground (slice choice); default: above the median intensity.
        reference_title: the first column's title.

    Returns:
        An RGB PIL image.

    Raises:
        ValueError: a panel's shape differs from the reference's.
    """
    from PIL import Image, ImageDraw, ImageFont

    for panel in panels:
        if np.shape(panel.volume) != np.shape(reference):
            raise ValueError(
                f"panel {panel.title!r} has shape {np.shape(panel.volume)}, expected {np.shape(reference)}"
            )
    ref, spacing = canonical(np.asarray(reference, dtype=np.float64), affine)
    columns = [Panel(reference_title, np.asarray(reference), "", error=False), *panels]
    vols = [canonical(np.asarray(p.volume, dtype=np.float64), affine)[0] for p in columns]
    miss = None if missing is None else canonical(np.asarray(missing, dtype=bool), affine)[0]
    fg = ref > np.percentile(ref, 50) if foreground is None else canonical(foreground, affine)[0]
    index = choose_slices(ref.shape, miss, fg)
    low, high = (float(v) for v in np.percentile(ref, [0.5, 99.5]))
    err_high = ERROR_FRACTION * (high - low)

    extent = np.asarray(ref.shape) * spacing  # mm along R, A, S
    # Thin slabs (few slices) get larger panels, up to MAX_PANEL_PX, so that their side views stay legible.
    scale = max(
        PANEL_PX / float(extent.max()),
        min(MIN_SIDE_PX / float(extent.min()), MAX_PANEL_PX / float(extent.max())),
    )
    sizes = {  # (width, height) in pixels
        "axial": (round(extent[0] * scale), round(extent[1] * scale)),
        "coronal": (round(extent[0] * scale), round(extent[2] * scale)),
        "sagittal": (round(extent[1] * scale), round(extent[2] * scale)),
    }
    col_w = max(s[0] for s in sizes.values()) + 6
    font = ImageFont.load_default(size=13)
    small = ImageFont.load_default(size=11)
    label_w, header_h, gap = 78, 26, 8
    colhead_h = 22 + 14 * max(len(p.subtitle.splitlines()) for p in columns)
    rows = [(v, False) for v in VIEWS] + [(v, True) for v in VIEWS]
    height = header_h + colhead_h + sum(sizes[v][1] + 4 for v, _ in rows) + gap + 18
    # Long titles widen the canvas rather than being cut off.
    title_w = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font)) + 16
    canvas = Image.new("RGB", (max(label_w + col_w * len(columns), title_w), height), (20, 20, 20))
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), title, fill=(255, 255, 255), font=font)
    for c, panel in enumerate(columns):
        x = label_w + c * col_w
        draw.text((x + 3, header_h), panel.title, fill=(255, 255, 255), font=font)
        if panel.subtitle:
            for line_no, line in enumerate(panel.subtitle.splitlines()):
                draw.text((x + 3, header_h + 16 + 13 * line_no), line, fill=(200, 200, 120), font=small)
    y = header_h + colhead_h
    for view, is_error in rows:
        w, h = sizes[view]
        if is_error and view == "axial":
            y += gap
        name = f"|error| {view[:3]}." if is_error else view
        draw.text((6, y + h // 2 - 7), name, fill=(190, 190, 190), font=small)
        for c, (panel, vol) in enumerate(zip(columns, vols, strict=True)):
            x = label_w + c * col_w + (col_w - w) // 2
            if not is_error:
                plane = _slices(vol, index)[view]
                lo, hi = (0.0, float(np.percentile(vol, 99.9)) or 1.0) if panel.colour else (low, high)
                canvas.paste(_to_image(plane, (w, h), panel.colour, lo, hi), (x, y))
            elif panel.error and not panel.colour:
                plane = np.abs(_slices(vol, index)[view] - _slices(ref, index)[view])
                canvas.paste(_to_image(plane, (w, h), True, 0.0, err_high), (x, y))
            elif c == 0 and miss is not None:
                plane = _slices(miss.astype(np.float64), index)[view]
                canvas.paste(_to_image(plane, (w, h), False, 0.0, 1.0), (x, y))
                box = draw.textbbox((x + 2, y + 2), "missing", font=small)
                draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(20, 20, 20))
                draw.text((x + 2, y + 2), "missing", fill=(255, 255, 255), font=small)
        y += h + 4
    note = f"grey window {low:.4g}-{high:.4g}; errors 0-{err_high:.4g} (black-red-yellow-white)"
    draw.text((8, height - 16), note, fill=(160, 160, 160), font=small)
    return canvas


def save_montage(image: Image.Image, path: str | Path) -> Path:
    """Write a montage as a 256-colour PNG, atomically (creating the folder); returns the path."""
    from PIL import Image

    from medidiff.fsutil import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # 256 adaptive colours (grey levels and the error maps' ramp): noise makes full-colour PNGs 3x larger.
    palette = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    with atomic_path(path, suffix=".png") as tmp:
        palette.save(tmp, format="PNG", optimize=True)
    return path
