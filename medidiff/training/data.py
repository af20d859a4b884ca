"""Training data: random, augmented 3D patches from real volumes, as a MONAI dataset.

Each volume is read once (``medidiff.io.read_volume``), optionally freed of its bias field (N4), robustly
normalised to [0, 1] and cached with a foreground mask. Every draw then: picks a foreground-biased region
(``RandCropByPosNegLabeld``), resamples it to a random voxel size in ``spacing_range`` mm with a small random
rotation (one MONAI ``Affine``; with probability ``aniso_prob`` one axis gets thick slices instead), flips
and rotates it by 90 degrees along random axes, perturbs its contrast (gamma, histogram shift, optional
contrast inversion, which makes T1 look T2-like), and maps it to model units [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Affine,
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandHistogramShiftd,
    RandomizableTransform,
    RandRotate90d,
)

from medidiff.normalize import Normalizer


@dataclass
class PatchDataConfig:
    """Settings of the patch pipeline (the ``data`` section of a training config)."""

    files: list[str] = field(default_factory=list)
    patch_size: tuple[int, int, int] = (48, 48, 48)
    spacing_range: tuple[float, float] = (0.8, 1.5)
    max_rotation_deg: float = 10.0
    resample_prob: float = 0.5
    gamma_range: tuple[float, float] = (0.7, 1.5)
    histogram_shift_prob: float = 0.3
    invert_prob: float = 0.2
    foreground_ratio: float = 0.8
    samples_per_volume: int = 4
    clean_air: bool = True
    # Anisotropic grids, as clinical scans have: with this probability one random axis of the patch is
    # sampled at a slice spacing drawn in aniso_spacing_range mm (anatomy squashed along it), after a
    # Gaussian slice profile as wide as that spacing (FWHM). 0: isotropic patches only.
    aniso_prob: float = 0.0
    aniso_spacing_range: tuple[float, float] = (1.5, 3.0)
    # Divide out each volume's bias field (N4) before training: a prior trained on shaded scans learns
    # that smooth fields are anatomy, and then leaves them in place when asked to remove one.
    bias_correct: bool = False


def smooth_air(data: np.ndarray, margin: int = 3, sigma: float = 3.0) -> np.ndarray:
    """Replace the air around the head by a smooth version of itself (float32, same shape).

    Real scans carry acquisition noise in the air; a prior trained on it learns that noise as anatomy and
    then leaves part of the noise it should remove. Outside the head (``metrics.foreground_mask`` grown by
    ``margin`` voxels) the volume is replaced by its normalised Gaussian average over the air alone, which
    keeps slow structure (ghosts, shading) and drops the white noise. Volumes without air are unchanged.
    """
    from scipy.ndimage import binary_dilation

    from medidiff.metrics import foreground_mask
    from medidiff.restoration.fill import normalized_convolution

    head = binary_dilation(foreground_mask(data), iterations=margin)
    air = ~head
    if not air.any():
        return data.astype(np.float32)
    smooth, _ = normalized_convolution(np.asarray(data, dtype=np.float32), air.astype(np.float32), sigma)
    return np.where(air, smooth, data).astype(np.float32)


def load_training_volume(
    path: str | Path,
    normalizer: Normalizer | None = None,
    clean_air: bool = True,
    bias_correct: bool = False,
) -> dict[str, Any]:
    """Read a volume, optionally divide out its bias field (:func:`medidiff.n4.n4_correct`) and smooth its
    air (:func:`smooth_air`), normalise it to [0, 1] (p0.5 -> 0, p99.5 -> 1) and compute a foreground label.

    Returns a dict with ``image`` (1, I, J, K) float32 tensor, ``label`` (1, I, J, K) uint8, ``spacing``.
    """
    from medidiff.io import read_volume

    vol = read_volume(path)
    raw = np.asarray(vol.data, dtype=np.float32)
    if bias_correct:
        from medidiff.n4 import n4_correct

        # shrink 4: the field is smooth, and the fit takes 1-2 s per volume instead of ~15 s
        raw = n4_correct(np.clip(raw, 0.0, None), vol.spacing, shrink=4).astype(np.float32)
    if clean_air:
        raw = smooth_air(raw)
    norm = normalizer or Normalizer()
    data01 = (norm.fit(raw).forward(raw) + 1.0) / 2.0
    threshold = 0.1
    label = (data01 > threshold).astype(np.uint8)
    return {
        "image": torch.from_numpy(data01[None].astype(np.float32)),
        "label": torch.from_numpy(label[None]),
        "spacing": np.asarray(vol.spacing, dtype=np.float64),
        "source": str(path),
    }


class RandResampleRotated(RandomizableTransform, MapTransform):
    """Resample ``image`` to a random voxel size and rotate it slightly, output ``patch_size``.

    A voxel size is drawn uniformly in ``[max(lo, native), max(hi, 1.1 * native)]`` per volume: a volume is
    never upsampled beyond its native resolution, which would teach the prior blurred images. Interpolation
    itself smooths a little, so with probability ``1 - resample_prob`` the patch is instead cut on the native
    grid (centre crop, zero-padded if the volume is smaller): the prior also sees unresampled texture.

    With probability ``aniso_prob`` (of the resampled patches) one random axis is instead sampled at a
    slice spacing drawn in ``aniso_spacing_range`` mm (never finer than the in-plane size), after a Gaussian
    slice profile whose FWHM is that spacing (the part the native voxel already integrates is subtracted):
    the thick, squashed look of a clinical 2D acquisition. The rotation is small, so the profile is applied
    along the source axis that becomes the thick one.
    """

    def __init__(
        self,
        keys: Sequence[str],
        patch_size: Sequence[int],
        spacing_range: tuple[float, float],
        max_rotation_deg: float,
        resample_prob: float = 1.0,
        aniso_prob: float = 0.0,
        aniso_spacing_range: tuple[float, float] = (1.5, 3.0),
    ) -> None:
        RandomizableTransform.__init__(self, prob=resample_prob)
        MapTransform.__init__(self, keys)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.spacing_range = spacing_range
        self.max_rotation = math.radians(max_rotation_deg)
        self.aniso_prob = float(aniso_prob)
        self.aniso_spacing_range = aniso_spacing_range

    def _thick_axis(self, target: float, spacing: np.ndarray) -> tuple[int, float, float] | None:
        """(axis, slice spacing mm, profile sigma in source voxels), or None for an isotropic patch."""
        if self.aniso_prob <= 0.0 or self.R.uniform() >= self.aniso_prob:
            return None
        axis = int(self.R.randint(3))
        lo, hi = (max(float(s), target) for s in self.aniso_spacing_range)
        thick = float(self.R.uniform(lo, max(hi, lo)))
        fwhm_extra = math.sqrt(max(thick**2 - float(spacing[axis]) ** 2, 0.0))
        return axis, thick, fwhm_extra / (2.0 * math.sqrt(2.0 * math.log(2.0))) / float(spacing[axis])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            from monai.transforms import CenterSpatialCrop, SpatialPad

            crop, pad = CenterSpatialCrop(self.patch_size), SpatialPad(self.patch_size, mode="constant")
            for key in self.key_iterator(d):
                d[key] = torch.as_tensor(pad(crop(d[key])))
            return d
        native = float(np.min(d["spacing"]))
        lo = max(self.spacing_range[0], native)
        hi = max(self.spacing_range[1], 1.1 * native)
        target = self.R.uniform(lo, hi)
        out_spacing = [target] * 3
        thick = self._thick_axis(target, d["spacing"])
        if thick is not None:
            from scipy.ndimage import gaussian_filter1d

            axis, out_spacing[axis], profile = thick
            for key in self.key_iterator(d):
                image = np.asarray(d[key], dtype=np.float32)
                d[key] = torch.from_numpy(gaussian_filter1d(image, profile, axis=axis + 1, mode="nearest"))
        scale = [o / float(s) for o, s in zip(out_spacing, d["spacing"], strict=True)]
        rotate = self.R.uniform(-self.max_rotation, self.max_rotation, size=3).tolist()
        affine = Affine(
            rotate_params=rotate,
            scale_params=scale,
            spatial_size=self.patch_size,
            padding_mode="zeros",
            mode="bilinear",
            image_only=True,
        )
        for key in self.key_iterator(d):
            d[key] = torch.as_tensor(affine(d[key]))
        return d


class RandInvertForegroundd(RandomizableTransform, MapTransform):
    """With probability ``prob``, map foreground intensities x -> 1 - x (T1-like -> T2-like contrast)."""

    def __init__(self, keys: Sequence[str], prob: float, threshold: float = 0.1) -> None:
        RandomizableTransform.__init__(self, prob=prob)
        MapTransform.__init__(self, keys)
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize(None)
        if not self._do_transform:
            return dict(data)
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            fg = x > self.threshold
            d[key] = torch.where(fg, (1.0 + self.threshold - x).clamp(min=self.threshold), x)
        return d


class ToModelRanged(MapTransform):
    """[0, 1] -> [-1, 1] and drop everything but the image."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return {k: torch.as_tensor(data[k]).float() * 2.0 - 1.0 for k in self.key_iterator(data)}


def patch_transform(cfg: PatchDataConfig) -> Compose:
    """The random per-draw pipeline: dict(image, label, spacing) -> dict(image (1, P, P, P) in [-1, 1])."""
    pad = 1.0 + math.sin(math.radians(cfg.max_rotation_deg)) * 1.5
    # The crop must hold the largest region the resampler may look at.
    widest = max(cfg.spacing_range[1], cfg.aniso_spacing_range[1] if cfg.aniso_prob > 0 else 0.0)
    crop = [math.ceil(p * widest * pad / 0.8) + 2 for p in cfg.patch_size]
    return Compose(
        [
            RandCropByPosNegLabeld(
                keys=["image"],
                label_key="label",
                fg_indices_key="fg_indices",
                bg_indices_key="bg_indices",
                spatial_size=crop,
                pos=cfg.foreground_ratio,
                neg=1.0 - cfg.foreground_ratio,
                num_samples=1,
                allow_smaller=True,
            ),
            RandResampleRotated(
                ["image"],
                cfg.patch_size,
                cfg.spacing_range,
                cfg.max_rotation_deg,
                cfg.resample_prob,
                cfg.aniso_prob,
                cfg.aniso_spacing_range,
            ),
            RandFlipd(["image"], prob=0.5, spatial_axis=0),
            RandFlipd(["image"], prob=0.5, spatial_axis=1),
            RandFlipd(["image"], prob=0.5, spatial_axis=2),
            RandRotate90d(["image"], prob=0.5, spatial_axes=(0, 1)),
            RandRotate90d(["image"], prob=0.5, spatial_axes=(1, 2)),
            RandAdjustContrastd(["image"], prob=0.5, gamma=cfg.gamma_range),
            RandHistogramShiftd(["image"], prob=cfg.histogram_shift_prob, num_control_points=(5, 10)),
            RandInvertForegroundd(["image"], prob=cfg.invert_prob),
            ToModelRanged(["image"]),
        ]
    )


class PatchDataset(torch.utils.data.IterableDataset):
    """An endless stream of augmented patches (1, P, P, P) from cached volumes.

    Volumes are split across DDP ranks and DataLoader workers: each stream (rank x worker) gets its own
    volumes when there are enough, else each rank does; patches always differ, as every stream is seeded
    from ``seed``, the rank and the worker id.
    """

    def __init__(self, cfg: PatchDataConfig, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if not cfg.files:
            from medidiff.errors import ConfigError

            raise ConfigError("the training config lists no data files")
        self.cfg = cfg
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._cache: dict[str, dict[str, Any]] = {}

    def _volume(self, path: str) -> dict[str, Any]:
        if path not in self._cache:
            from monai.transforms.utils import map_binary_to_indices

            volume = load_training_volume(
                path, clean_air=self.cfg.clean_air, bias_correct=self.cfg.bias_correct
            )
            # The crop's foreground/background voxel indices, once per volume: RandCropByPosNegLabeld would
            # otherwise rescan the whole label at every draw (two torch.nonzero calls: 40 patches of the
            # default config took 3.74 s, now 1.02 s, the same patches bit for bit). Stored as int32 (any
            # volume under 2^31 voxels): half the memory of MONAI's int64.
            fg, bg = map_binary_to_indices(volume["label"])
            volume["fg_indices"] = torch.as_tensor(fg).to(torch.int32)
            volume["bg_indices"] = torch.as_tensor(bg).to(torch.int32)
            self._cache[path] = volume
        return self._cache[path]

    def __iter__(self):  # type: ignore[no-untyped-def]
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream = self.rank * workers + worker
        streams = self.world_size * workers
        files = list(self.cfg.files)
        if len(files) >= streams:
            mine = files[stream::streams]
        elif len(files) >= self.world_size:  # too few for every worker, but each rank still gets its own
            mine = files[self.rank :: self.world_size]
        else:
            mine = files
        rng = np.random.default_rng([self.seed, stream])
        transform = patch_transform(self.cfg)
        transform.set_random_state(seed=int(rng.integers(2**31)))
        while True:
            path = mine[int(rng.integers(len(mine)))]
            volume = self._volume(path)
            for _ in range(self.cfg.samples_per_volume):
                out = transform(volume)
                # RandCropByPosNegLabeld makes a list (of one sample here); Compose maps the rest over it.
                yield (out[0] if isinstance(out, list) else out)["image"]
