"""medidiff.viz: montages drawn in RAS orientation with physical aspect, slices through the missing region,
hot error maps against the reference, palette PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medidiff.viz import Panel, choose_slices, hot, render, save_montage

RAS = np.diag([2.0, 2.0, 2.0, 1.0])


def _head(shape: tuple[int, int, int] = (24, 28, 20)) -> np.ndarray:
    """A bright ellipsoid on a dark background, (I, J, K) float32."""
    grid = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    inside = sum(g**2 for g in grid) < 0.7
    return np.where(inside, 100.0, 5.0).astype(np.float32)


def _reddish(image: Image.Image) -> int:
    """How many pixels are hot-coloured (red clearly above green): error and colour maps, never grey."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    return int(((rgb[..., 0] - rgb[..., 1]) > 60).sum())


def test_hot_ramp_goes_black_red_yellow_white() -> None:
    colours = hot(np.array([[-1.0, 0.0, 1 / 3, 2 / 3, 1.0, 2.0]]))
    assert colours.shape == (1, 6, 3) and colours.dtype == np.uint8
    white = [255, 255, 255]
    assert colours[0].tolist() == [[0, 0, 0], [0, 0, 0], [255, 0, 0], [255, 255, 0], white, white]


def test_choose_slices_goes_through_the_holes_but_not_a_wholly_missing_slice() -> None:
    shape = (20, 20, 20)
    foreground = np.zeros(shape, bool)
    foreground[4:14, 6:18, 2:12] = True
    assert choose_slices(shape, None, foreground) == (8, 11, 6)  # bounding-box centres
    missing = np.zeros(shape, bool)
    missing[9:12, 10, 5] = True  # a small hole
    missing[:, :, 15] = True  # a wholly missing slice (outside the foreground)
    missing[:, :, 3] = True  # another, inside: would win along k if allowed
    assert choose_slices(shape, missing, foreground) == (9, 10, 5)
    assert choose_slices(shape, None, np.zeros(shape, bool)) == (10, 10, 10)  # no foreground: centres


def _axial_marker(data: np.ndarray, marker: tuple[slice, slice, slice]) -> tuple[float, float]:
    """(row, column) on the canvas where a dark marker shows in the axial view (the topmost view)."""
    marked = data.copy()
    marked[marker] = 0.0
    diff = np.abs(
        np.asarray(render(marked, RAS, [], "t"), np.int32) - np.asarray(render(data, RAS, [], "t"), np.int32)
    ).max(axis=-1)
    hits = np.argwhere(diff > 60)
    axial = hits[hits[:, 0] < hits[:, 0].min() + 15]
    return float(axial[:, 0].mean()), float(axial[:, 1].mean())


def test_orientation_is_canonical_and_neurological() -> None:
    rng = np.random.default_rng(0)
    data = rng.uniform(50, 150, (20, 24, 16)).astype(np.float32)  # foreground everywhere: centre slices
    flipped_affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # LAS: i runs right -> left
    flipped_affine[0, 3] = 38.0
    ras = np.asarray(render(data, RAS, [], "t"))
    las = np.asarray(render(data[::-1].copy(), flipped_affine, [], "t"))
    assert np.array_equal(ras, las)  # the same anatomy draws the same picture, whatever the voxel order
    # In the axial view the subject's left (low x) is on the left (neurological), anterior (high y) is up.
    left = _axial_marker(data, (slice(0, 2), slice(11, 13), slice(7, 9)))
    anterior = _axial_marker(data, (slice(9, 11), slice(21, 23), slice(7, 9)))
    assert left[1] + 15 < anterior[1]
    assert anterior[0] + 15 < left[0]


def test_aspect_ratio_is_physical_not_voxels() -> None:
    fine = _head((40, 40, 40))
    coarse = fine[:, :, 2::4]  # same field of view with 4x thicker slices
    anisotropic = np.diag([1.0, 1.0, 4.0, 1.0])
    size_fine = render(fine, np.diag([1.0, 1.0, 1.0, 1.0]), [], "t").size
    size_coarse = render(coarse, anisotropic, [], "t").size
    assert size_fine == size_coarse
    assert render(coarse, np.diag([1.0, 1.0, 1.0, 1.0]), [], "t").size[1] < size_coarse[1]  # squashed if 1 mm


def test_error_rows_show_differences_from_the_reference_only() -> None:
    ref = _head()
    same = render(ref, RAS, [Panel("copy", ref.copy(), "40 dB / 1.000")], "t")
    assert _reddish(same) == 0  # a perfect result: black error maps
    shifted = render(ref, RAS, [Panel("off", ref + 5.0)], "t")
    assert _reddish(shifted) > 3 * 100 * 100  # an error of 5% of the window: all three error maps are red
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, ref.shape[0])[:, None, None], ref.shape)
    colour = render(ref, RAS, [Panel("std", ramp, error=False, colour=True)], "t")
    width, height = colour.size
    assert _reddish(colour.crop((0, 0, width, height // 2))) > 1000  # drawn in hot colours ...
    assert _reddish(colour.crop((0, 3 * height // 5, width, height))) == 0  # ... with no error map below
    assert same.size[1] == shifted.size[1] + 14  # one subtitle line


def test_missing_mask_and_long_titles(tmp_path: Path) -> None:
    ref = _head()
    missing = np.zeros(ref.shape, bool)
    missing[8:14, 10:16, 8:12] = True
    filled = np.where(missing, 0.0, ref)
    base = render(ref, RAS, [Panel("holes", filled)], "t")
    masked = render(ref, RAS, [Panel("holes", filled)], "t", missing=missing)
    assert base.size == masked.size
    # The reference column's error rows: empty without a mask, the white mask (and its label) with one.
    width, height = base.size
    region = (slice(height // 2, height), slice(78, 78 + (width - 78) // 2))
    assert (np.asarray(base)[region] > 240).all(axis=-1).sum() == 0
    assert (np.asarray(masked)[region] > 240).all(axis=-1).sum() > 3 * 12 * 12
    long = render(ref, RAS, [], "a title much longer than the one column of this little montage " * 2)
    assert long.size[0] > base.size[0]  # widened rather than cut off


def test_save_montage_writes_a_palette_png(tmp_path: Path) -> None:
    image = render(_head(), RAS, [Panel("x", _head() * 1.1, "1 dB / 0.5\nsecond line")], "title")
    path = save_montage(image, tmp_path / "nested" / "m.png")
    assert path == tmp_path / "nested" / "m.png"
    assert [p.name for p in path.parent.iterdir()] == ["m.png"]  # no temporary file left behind
    with Image.open(path) as saved:
        assert saved.format == "PNG" and saved.mode == "P" and saved.size == image.size
        difference = np.abs(np.asarray(saved.convert("RGB"), np.int32) - np.asarray(image, np.int32))
    assert difference.mean() < 2.0  # 256 adaptive colours lose almost nothing


def test_panels_must_share_the_reference_grid() -> None:
    with pytest.raises(ValueError):
        render(_head(), RAS, [Panel("wrong grid", _head((10, 10, 10)))], "t")
