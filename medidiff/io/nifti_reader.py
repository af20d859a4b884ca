"""MONAI's NibabelReader, plus what medidiff needs to write the file back unchanged.

MONAI's ``NibabelReader`` falls short of a faithful round trip in three ways, fixed here:

- its ``read`` passes every image through ``correct_nifti_header_if_necessary``, which silently replaces
  the sform by the qform (or rewrites pixdim) when the sform's column norms differ from pixdim, as they do
  for any sheared sform; medidiff loads with nibabel directly and keeps nibabel's affine;
- ``LoadImage`` turns the array into a torch tensor, and torch has no uint16, so uint16 comes back as
  int32: the reader records the true dtype;
- the header dict holds the qform only as a quaternion; both 4×4 matrices are recorded next to their codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import NibabelReader
from monai.utils import ensure_tuple

# Header fields kept in Volume.meta["nifti_header"] (JSON-friendly); writers copy the descriptive ones back.
_KEPT_FIELDS = (
    "datatype",
    "dim_info",
    "intent_code",
    "intent_p1",
    "intent_p2",
    "intent_p3",
    "intent_name",
    "scl_slope",
    "scl_inter",
    "slice_code",
    "slice_start",
    "slice_end",
    "slice_duration",
    "toffset",
    "xyzt_units",
    "cal_min",
    "cal_max",
    "descrip",
    "aux_file",
    "qform_code",
    "sform_code",
)


def _plain(value: Any) -> Any:
    array = np.asarray(value)
    if array.dtype.kind in "SU":
        raw = array.item()
        return raw.decode("latin-1").rstrip("\x00") if isinstance(raw, bytes) else str(raw)
    if array.ndim == 0:
        item = array.item()
        return None if isinstance(item, float) and not np.isfinite(item) else item
    return array.tolist()


class HeaderNibabelReader(NibabelReader):
    """``NibabelReader`` that keeps the native orientation and records dtype, qform and sform."""

    def __init__(self) -> None:
        super().__init__(as_closest_canonical=False, squeeze_non_spatial_dims=False)

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> Any:
        """Load with nibabel, without MONAI's header "correction" (see the module docstring)."""
        filenames = ensure_tuple(data)
        self.filenames = filenames
        images = [nib.load(str(name), **{**self.kwargs, **kwargs}) for name in filenames]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Return ``(array, meta)``: MONAI's, plus ``medidiff_dtype`` and ``nifti_header``.

        ``nifti_header`` holds the descriptive header fields, the qform/sform codes and both 4×4 matrices
        (``qform``, ``sform``) as stored, and the on-disk dtype (``disk_dtype``).
        """
        array, meta = super().get_data(img)
        array = np.asarray(array)
        if not array.dtype.isnative:  # big-endian files (e.g. from SPM/Analyze era); torch needs native order
            array = array.astype(array.dtype.newbyteorder("="))
        header = img.header
        fields = {name: _plain(header[name]) for name in _KEPT_FIELDS if name in header}
        fields["qform"] = np.asarray(header.get_qform(), dtype=np.float64).tolist()
        fields["sform"] = np.asarray(header.get_sform(), dtype=np.float64).tolist()
        fields["disk_dtype"] = str(header.get_data_dtype().newbyteorder("="))
        fields["pixdim"] = [float(v) for v in header["pixdim"]]
        meta["medidiff_dtype"] = str(np.asarray(array).dtype.newbyteorder("="))
        meta["medidiff_format"] = "nifti"
        meta["nifti_header"] = fields
        return array, meta
