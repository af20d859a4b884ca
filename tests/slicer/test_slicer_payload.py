"""The extension's medidiff payload: built from this tree, installed into a clean Python as Slicer would.

``tools/build_slicer_payload.py`` builds the wheel and manifest that the extension ships; the module installs
the wheel as ``medidiff @ file:///...whl#sha256=...``. Here the payload is built, loaded by the module's own
code, and installed into a fresh virtual environment of Python 3.12 (Slicer 5.10's Python) when this machine
has one, else of the running Python, with ``--no-index``: no package index is named or reachable. Dependencies
are left out (``--no-deps``; torch comes from PyTorchUtils in Slicer): what is checked is that exactly the
module's medidiff lands, that pip records the hash the module compares, and that its torch-free parts (the
task registry the panel reads, ``medidiff --version``) run. docs/slicer.md records a full install with the
dependencies and a real restoration.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from MediDiffLib.catalog import Catalog
from MediDiffLib.dependencies import Installed, Source, load_payload, stale_reason
from test_slicer_isolation import find_python


@pytest.fixture(scope="module")
def payload_module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module folder with a freshly built payload, as the extension's build lays it out."""
    root = Path(__file__).resolve().parents[2]
    module = tmp_path_factory.mktemp("module")
    out = module / "Resources" / "MediDiffPayload"
    result = subprocess.run(
        [
            sys.executable,
            str(root / "tools" / "build_slicer_payload.py"),
            "--out",
            str(out),
            "--source",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return module


def test_payload_manifest_matches_this_tree(payload_module_dir: Path, catalog: Catalog) -> None:
    import medidiff

    payload = load_payload(payload_module_dir)
    assert payload is not None
    assert payload.version == medidiff.__version__
    assert payload.wheel == f"medidiff-{medidiff.__version__}-py3-none-any.whl"
    assert payload.requires_python == ">=3.10" and payload.torch_requirement.startswith(">=")
    assert payload.catalog == catalog  # the panel's pre-install task list is the registry's
    data = json.loads((payload.folder / "medidiff-payload.json").read_text())
    assert "index" not in json.dumps(data).lower()


def clean_venv(python: str, folder: Path) -> Path:
    if Path(python).resolve() == Path(sys.executable).resolve():
        venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    else:
        subprocess.run([python, "-m", "venv", "--clear", str(folder)], check=True, timeout=300)
    return folder / "bin" / "python"


def test_payload_installs_exactly_the_modules_medidiff(payload_module_dir: Path, tmp_path: Path) -> None:
    python312 = find_python((3, 12))
    python = clean_venv(python312 or sys.executable, tmp_path / "venv")
    payload = load_payload(payload_module_dir)
    assert payload is not None
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--no-deps", "-q", payload.requirement()],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr
    probe = """
import importlib.metadata as m, json, sys
sys.path.insert(0, sys.argv[1])
from MediDiffLib.dependencies import installed_medidiff
from MediDiffLib.catalog import load_installed
found = installed_medidiff()
catalog = load_installed()
print(json.dumps({"python": list(sys.version_info[:2]), "installed": found.__dict__,
                  "tasks": list(catalog.names)}))
"""
    module_dir = Path(__file__).resolve().parents[2] / "slicer" / "MediDiff"
    result = subprocess.run(
        [str(python), "-c", probe, str(module_dir)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    if python312 is not None:
        assert report["python"] == [3, 12]
    installed = Installed(**report["installed"])
    assert installed.version == payload.version and installed.sha256 == payload.sha256
    assert stale_reason(installed, Source(payload=payload)) is None
    assert report["tasks"] == list(payload.catalog.names)
    version = subprocess.run(
        [str(python), "-m", "medidiff", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert version.returncode == 0, version.stderr
    assert payload.version in version.stdout + version.stderr


def test_python_3_9_is_refused_by_pip_and_explained_by_the_module(
    payload_module_dir: Path, tmp_path: Path
) -> None:
    python39 = find_python((3, 9))
    if python39 is None:
        pytest.skip("no Python 3.9 interpreter on this machine (python3.9 or pyenv 3.9.x)")
    payload = load_payload(payload_module_dir)
    assert payload is not None
    python = clean_venv(python39, tmp_path / "venv39")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--no-deps", "-q", payload.requirement()],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert install.returncode != 0  # pip's refusal, with no word about Slicer: the module's gate explains
    assert "Python" in install.stderr
