"""medidiff: restore 3D medical volumes with diffusion models.

Public API (imported lazily so `import medidiff` stays light)::

    vol = medidiff.read_volume("scan.nii.gz")            # or a DICOM directory, .nrrd, .mha
    out = medidiff.restore(vol, task="denoise", sigma="auto")
    medidiff.write_volume(out, "restored.nii.gz")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Volume": "medidiff.io.volume",
    "read_volume": "medidiff.io",
    "write_volume": "medidiff.io",
    "restore": "medidiff.inference.pipeline",
    "load_model": "medidiff.nets.checkpoint",
    "MedidiffError": "medidiff.errors",
    "retain_freed_memory": "medidiff.memory",
}

__all__ = [
    "MedidiffError",
    "Volume",
    "__version__",
    "load_model",
    "read_volume",
    "restore",
    "retain_freed_memory",
    "write_volume",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medidiff' has no attribute {name!r}")
