"""A MONAI ``ImageReader`` backed by SimpleITK, for NRRD (.nrrd/.nhdr) and MetaImage (.mha/.mhd).

MONAI's own ``ITKReader`` needs the ``itk`` package (hundreds of MB); SimpleITK is already a dependency and
reads the same formats (it is how 3D Slicer's native NRRD files are read outside Slicer).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple

from medidiff.errors import InputError
from medidiff.io.geometry import affine_from_itk, reader_meta
from medidiff.io.paths import SITK_SUFFIXES, image_suffix


class SimpleITKReader(ImageReader):
    """Read NRRD/MetaImage files as (I, J, K[, C]) arrays with a RAS affine.

    The array is in nibabel's I, J, K order (SimpleITK's numpy view is K, J, I). A 4D image or a vector
    pixel type gives a trailing axis, reported through ``original_channel_dim = -1``.
    """

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        return all(image_suffix(f) in SITK_SUFFIXES for f in ensure_tuple(filename))

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Any:
        import SimpleITK as sitk

        paths = ensure_tuple(data)
        if len(paths) != 1:
            raise InputError("read one NRRD/MetaImage file at a time")
        return sitk.ReadImage(str(Path(paths[0])))

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Return ``(array, meta)``: MONAI's metadata keys plus ``medidiff_dtype`` and ``sitk_metadata``."""
        import SimpleITK as sitk

        dim = img.GetDimension()
        vector = img.GetNumberOfComponentsPerPixel() > 1
        if dim > 4 or (dim == 4 and vector):
            raise InputError(f"{dim}D images{' with vector pixels' if vector else ''} are not supported")
        array = sitk.GetArrayFromImage(img)  # (K, J, I) or (T, K, J, I), plus a trailing C for vector pixels
        spatial = array.ndim - (1 if vector else 0)
        # reverse the axes to (I, J, K[, T]); a vector component axis stays last
        order = list(range(spatial))[::-1] + ([spatial] if vector else [])
        array = np.ascontiguousarray(np.transpose(array, order))
        # a 2D image gets a unit third axis here; read_volume rejects it with the input's name
        n = min(dim, 3)
        origin, spacing, direction = np.zeros(3), np.ones(3), np.eye(3)
        origin[:n] = img.GetOrigin()[:n]
        spacing[:n] = img.GetSpacing()[:n]
        direction[:n, :n] = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:n, :n]
        affine = affine_from_itk(origin, spacing, direction.ravel())
        meta: dict[str, Any] = {
            **reader_meta(array, affine, spacing),
            "sitk_metadata": {key: img.GetMetaData(key) for key in img.GetMetaDataKeys()},
        }
        return array, meta
