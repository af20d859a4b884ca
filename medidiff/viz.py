"""PNG montages of 3D volumes: three orthogonal views per volume, side by side, with titles.

Pure numpy + Pillow (no plotting library needed). Views are taken through a common centre voxel and
resampled so that millimetres are square on screen (anisotropic voxels keep their true aspect).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIEW_NAMES = ("axial", "coronal", "sagittal")


@dataclass
class Panel:
    """One column of a montage: a title, a 3D array (I, J, K), and how to map it to grey levels.

    ``window`` = (low, high) intensities mapped to black/white; ``diverging`` draws signed data (errors)
    around a mid-grey zero with ``window = (-m, m)``.
    """

    title: str
    data: np.ndarray
    window: tuple[float, float] | None = None
    diverging: bool = False


def robust_window(data: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    lo, hi = np.percentile(np.asarray(data, dtype=np.float64), [low, high])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _views(data: np.ndarray, centre: Sequence[int]) -> list[np.ndarray]:
    """Axial (I, J at k), coronal (I, K at j) and sagittal (J, K at i) slices, rotated for display."""
    i, j, k = centre
    return [np.rot90(data[:, :, k]), np.rot90(data[:, j, :]), np.rot90(data[i, :, :])]


def _view_spacings(spacing: Sequence[float]) -> list[tuple[float, float]]:
    si, sj, sk = spacing
    # rot90 maps (rows, cols) = (second axis reversed, first axis)
    return [(sj, si), (sk, si), (sk, sj)]


def _resample(image: np.ndarray, row_mm: float, col_mm: float, pixel_mm: float) -> np.ndarray:
    from PIL import Image

    rows = max(1, round(image.shape[0] * row_mm / pixel_mm))
    cols = max(1, round(image.shape[1] * col_mm / pixel_mm))
    pil = Image.fromarray(image.astype(np.float32), mode="F")
    return np.asarray(pil.resize((cols, rows), Image.Resampling.BILINEAR))


def render(
    panels: Sequence[Panel],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    scale: int = 2,
    centre: Sequence[int] | None = None,
) -> np.ndarray:
    """The montage as an (H, W) uint8 image: one column per panel, rows axial/coronal/sagittal."""
    from PIL import Image, ImageDraw

    shape = panels[0].data.shape
    for panel in panels:
        if panel.data.shape != shape:
            raise ValueError(f"panel {panel.title!r} has shape {panel.data.shape}, expected {shape}")
    centre = [s // 2 for s in shape] if centre is None else list(centre)
    pixel_mm = min(spacing) / scale
    columns = []
    for panel in panels:
        lo, hi = panel.window or robust_window(panel.data)
        tiles = []
        for view, (row_mm, col_mm) in zip(_views(panel.data, centre), _view_spacings(spacing), strict=True):
            grey = np.clip((view.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0) * 255.0
            tiles.append(_resample(grey, row_mm, col_mm, pixel_mm))
        columns.append(tiles)
    heights = [max(col[r].shape[0] for col in columns) for r in range(3)]
    widths = [max(tile.shape[1] for tile in col) for col in columns]
    title_h, gap = 16, 4
    canvas = Image.new("L", (sum(widths) + gap * (len(columns) + 1), title_h + sum(heights) + gap * 4), 0)
    draw = ImageDraw.Draw(canvas)
    x = gap
    for panel, col, width in zip(panels, columns, widths, strict=True):
        draw.text((x, 2), panel.title[: max(4, width // 6)], fill=255)
        y = title_h + gap
        for tile, height in zip(col, heights, strict=True):
            canvas.paste(Image.fromarray(np.clip(tile, 0, 255).astype(np.uint8)), (x, y))
            y += height + gap
        x += width + gap
    return np.asarray(canvas)


def save_montage(
    path: str | Path, panels: Sequence[Panel], spacing: Sequence[float] = (1.0, 1.0, 1.0), scale: int = 2
) -> Path:
    """Render ``panels`` and write a PNG atomically; returns the path."""
    from PIL import Image

    from medidiff.fsutil import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(render(panels, spacing, scale)).save(tmp)
    return path


def error_panel(title: str, reference: np.ndarray, test: np.ndarray, window: tuple[float, float]) -> Panel:
    """|test - reference| shown on the same scale as the images, brightened 4x so small errors show."""
    lo, hi = window
    return Panel(title, np.abs(test.astype(np.float64) - reference), (0.0, (hi - lo) / 4.0))
