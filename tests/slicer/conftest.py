"""Make the Slicer module's Slicer-free library importable as ``MediDiffLib`` (not part of medidiff),
and load ``MediDiff.py`` itself on real MRML (PyPI ``slicer-core``) for the Logic's tests."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "slicer" / "MediDiff"

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # slicer_standins


@pytest.fixture(autouse=True)
def _keep_medidiff_modules() -> Iterator[None]:
    """After an install the module drops medidiff's modules from sys.modules (to import the new version);
    in this test process that would leave the other tests holding classes of a forgotten module (an
    ``except ConfigError`` no longer catching the ConfigError raised); they are put back after each test."""
    kept = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "medidiff"}
    yield
    for name in [n for n in sys.modules if n.split(".")[0] == "medidiff"]:
        if name not in kept:
            del sys.modules[name]
    sys.modules.update(kept)


@pytest.fixture
def module_dir() -> Path:
    """The scripted module's folder: ``slicer/MediDiff``."""
    return MODULE_DIR


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def catalog():  # type: ignore[no-untyped-def]
    """The module's view of the installed medidiff's task registry (medidiff.tasks)."""
    from MediDiffLib.catalog import from_registry

    import medidiff
    import medidiff.tasks

    return from_registry(medidiff.tasks, medidiff.__version__)


def _foreign_slicer_folder(entry: str) -> bool:
    """Whether a sys.path entry holds a ``slicer`` folder that is not a package (this repository's slicer/,
    tests/slicer/): slicer-core's ``slicer`` meta-package would import every module found in such folders."""
    folder = Path(entry or ".") / "slicer"
    return folder.is_dir() and not (folder / "__init__.py").is_file()


def real_slicer() -> types.ModuleType:
    """Slicer's MRML in Python (slicer-core), or skip with the reason."""
    loaded = sys.modules.get("slicer")
    if loaded is None or not hasattr(loaded, "vtkMRMLScene"):
        saved = list(sys.path)
        sys.path[:] = [entry for entry in sys.path if not _foreign_slicer_folder(entry)]
        try:
            importlib.import_module("slicer.util")
        except ImportError:
            sys.modules.pop("slicer", None)
            pytest.skip(
                "PyPI slicer-core (Slicer's MRML without Qt) is not installed: `make install` adds it"
            )
        finally:
            sys.path[:] = saved
        loaded = sys.modules["slicer"]
    if not hasattr(loaded, "vtkMRMLScene"):
        pytest.skip("the importable `slicer` package is not slicer-core's MRML")
    return loaded


@pytest.fixture
def mrml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """A fresh real MRML scene as ``slicer.mrmlScene``, and ``MediDiff.py`` loaded against it.

    Yields a namespace: ``slicer`` (the real package), ``scene``, ``module`` (MediDiff.py), ``app``.
    """
    import slicer_standins as standins
    import vtk

    slicer = real_slicer()
    scene = slicer.vtkMRMLScene()
    app = standins.App(tmp_path / "slicer-temp")
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    qt = types.ModuleType("qt")
    qt.QTimer = standins.QTimer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "vtk", vtk)
    monkeypatch.setitem(
        sys.modules, "slicer.ScriptedLoadableModule", standins.scripted_loadable_module(slicer)
    )
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", standins.parameter_node_wrapper())
    spec = importlib.util.spec_from_file_location("MediDiff", MODULE_DIR / "MediDiff.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield types.SimpleNamespace(slicer=slicer, scene=scene, module=module, app=app)
    scene.Clear(1)
