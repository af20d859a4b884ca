"""MONAI's NibabelReader, plus what medidiff needs to write the file back unchanged.

MONAI's ``NibabelReader`` returns the voxels and ``dict(header)``; two things are missing for a faithful
round trip: the voxel dtype (``LoadImage`` turns the array into a torch tensor, and torch has no uint16, so
uint16 comes back as int32) and the qform/sform matrices next to their codes (the header fields only hold
the quaternion form). This subclass records both in plain Python values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.data import NibabelReader

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

    def get_data(self, img: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Return ``(array, meta)``: MONAI's, plus ``medidiff_dtype`` and ``nifti_header``.

        ``nifti_header`` holds the descriptive header fields, the qform/sform codes and both 4×4 matrices
        (``qform``, ``sform``) as stored, and the on-disk dtype (``disk_dtype``).
        """
        array, meta = super().get_data(img)
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
