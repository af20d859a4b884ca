"""What ``restore()`` accepts and returns: a :class:`Volume`, a MONAI ``MetaTensor`` or a 3D array.

The pipeline works on Volumes; these convert at its edges, so a MONAI user gets a MetaTensor back (with
its metadata, channel layout and the output's affine) and a NumPy user an array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medidiff.errors import InputError
from medidiff.io.volume import Volume


def as_volume(data: Any) -> tuple[Volume, str]:
    """Accept a Volume, a MONAI MetaTensor (C=1 or no channel) or a 3D array; returns (volume, kind)."""
    if isinstance(data, Volume):
        return data, "volume"
    try:
        from monai.data import MetaTensor
    except ImportError:  # pragma: no cover - monai is a dependency
        MetaTensor = ()  # type: ignore[misc,assignment]
    if isinstance(data, MetaTensor):
        array = data.detach().cpu().numpy()
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 3:
            raise InputError(
                f"restore needs a one-channel MetaTensor (1, I, J, K) or (I, J, K), got {tuple(data.shape)}"
            )
        affine = np.asarray(data.affine.cpu().numpy() if hasattr(data.affine, "cpu") else data.affine)
        return Volume(array, affine, {}, "MetaTensor"), "metatensor"
    array = np.asarray(data)
    if array.ndim != 3:
        raise InputError(f"restore needs a 3D volume, got an array of shape {array.shape}")
    return Volume(array, np.eye(4), {}, "array"), "array"


def check_finite(volume: Volume, what: str) -> None:
    """NaN or infinite voxels are an error, never silently replaced."""
    if not np.all(np.isfinite(volume.data)):
        raise InputError(f"{what} contains NaN or infinite voxels")


def in_input_dtype(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer inputs come back rounded and clipped to their type, float64 stays float64, else float32."""
    from medidiff.io.write import cast_to

    if dtype.kind in "ui":
        return cast_to(data, dtype)
    return data.astype(np.float64 if dtype == np.float64 else np.float32)


def like_input(out: Volume, kind: str, original: Any) -> Any:
    """The result in the input's form; a MetaTensor keeps its metadata, channel layout and (new) affine."""
    if kind == "volume":
        return out
    if kind == "metatensor":
        import torch
        from monai.data import MetaTensor

        data = torch.from_numpy(np.ascontiguousarray(out.data))
        if original.ndim == 4:
            data = data[None]
        meta = dict(original.meta)
        meta.pop("affine", None)
        meta["spatial_shape"] = np.asarray(out.shape)
        return MetaTensor(
            data,
            affine=torch.as_tensor(out.affine, dtype=torch.float64),
            meta=meta,
            applied_operations=list(original.applied_operations),
        )
    return out.data
