"""Medical volume I/O that keeps geometry: NIfTI, DICOM series, NRRD/MetaImage <-> :class:`Volume`.

``read_volume`` and ``write_volume`` are the only entry points the rest of medidiff needs; LPS <-> RAS
conversions happen in this package and nowhere else.
"""

from __future__ import annotations

from medidiff.io.read import read_volume
from medidiff.io.volume import Volume
from medidiff.io.write import OUTPUT_DTYPES, write_volume

__all__ = ["OUTPUT_DTYPES", "Volume", "read_volume", "write_volume"]
