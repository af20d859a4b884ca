"""MONAI dictionary transforms: restoration as one step of a MONAI ``Compose`` pipeline.

This module imports the pipeline (and MONAI); the pipeline never imports it. The intensity scaling the
model works in is :class:`medidiff.normalize.Normalizer` (re-exported here for older imports).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from medidiff.inference.pipeline import restore
from medidiff.normalize import Normalizer

__all__ = ["Normalizer", "Restored"]


class Restored(MapTransform):
    """Run :func:`medidiff.restore` on the images of a dictionary (MONAI's dictionary-transform style).

    A thin wrapper, like MONAI's own dictionary transforms: each key's image ((1, I, J, K) or (I, J, K)
    MetaTensor, Volume or array) is replaced by its restoration, of the same kind. A MetaTensor keeps its
    metadata, and its affine (the thick-slice task returns the fine grid's).

    Args:
        keys: keys of the images to restore.
        task: ``denoise``, ``inpaint`` or ``restore``.
        mask_key: for ``inpaint``, the key holding the mask (nonzero = missing voxels), if the mask is
            not given as ``mask=`` in ``restore_kwargs``.
        allow_missing_keys: do not fail on absent keys.
        restore_kwargs: passed to :func:`medidiff.restore` (``model``, ``sigma``, ``steps``, ``seed``...).

    Example::

        Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Restored("image", sigma="auto")])
    """

    def __init__(
        self,
        keys: KeysCollection,
        task: str = "denoise",
        mask_key: str | None = None,
        allow_missing_keys: bool = False,
        **restore_kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.task = task
        self.mask_key = mask_key
        self.restore_kwargs = restore_kwargs

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        kwargs = dict(self.restore_kwargs)
        if self.mask_key is not None:
            kwargs["mask"] = d[self.mask_key]
        for key in self.key_iterator(d):
            d[key] = restore(d[key], task=self.task, **kwargs)
        return d
