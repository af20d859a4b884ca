"""Build the medidiff payload of the 3D Slicer extension: the wheel and its manifest.

The MediDiff Slicer module installs medidiff from its own ``Resources/MediDiffPayload`` folder, never by
name from a package index. This script builds that folder from a medidiff source tree:

- ``medidiff-<version>-py3-none-any.whl``: built with the source tree's own build backend (setuptools,
  PEP 517) from a clean copy of the tree, without network access when setuptools is importable;
- ``medidiff-payload.json``: the wheel's file name, sha256 and version, the Python and torch it requires
  (read from the wheel's metadata), the source revision, and the task catalog read from the built
  ``medidiff.tasks`` registry (the panel lists the tasks before medidiff is installed).

The extension's CMake build runs it with Slicer's Python (``slicer/MediDiff/CMakeLists.txt``); a developer can
run it by hand and install the result into any Python 3.10+ as Slicer does::

    python tools/build_slicer_payload.py --out build/Payload
    python -m pip install "medidiff @ file://$PWD/build/Payload/medidiff-0.1.0-py3-none-any.whl#sha256=..."

Exit code 0 on success; the manifest's path is printed last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

MANIFEST_NAME = "medidiff-payload.json"
# What the wheel is built from (everything else in the repository stays out of the copy).
SOURCE_ITEMS = ("pyproject.toml", "README.md", "LICENSE", "medidiff")
BUILD_SCRIPT = "import sys\nfrom setuptools import build_meta\nprint(build_meta.build_wheel(sys.argv[1]))\n"


def _copy_source(source: Path, destination: Path) -> None:
    for name in SOURCE_ITEMS:
        item = source / name
        if item.is_dir():
            shutil.copytree(item, destination / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif item.is_file():
            shutil.copy2(item, destination / name)
    if not (destination / "pyproject.toml").is_file():
        raise SystemExit(f"build_slicer_payload: {source} is not a medidiff source tree (no pyproject.toml)")


def build_wheel(source: Path, out: Path, python: str = sys.executable) -> Path:
    """Build the wheel of the medidiff tree ``source`` into ``out``; return its path."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("medidiff-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="medidiff-payload-") as temporary:
        tree = Path(temporary) / "src"
        tree.mkdir()
        _copy_source(source, tree)
        try:
            # The backend directly: no build isolation, so no download, when setuptools is installed.
            result = subprocess.run(
                [python, "-c", BUILD_SCRIPT, str(out.resolve())],
                cwd=tree,
                capture_output=True,
                text=True,
                check=True,
            )
            name = result.stdout.strip().splitlines()[-1]
        except subprocess.CalledProcessError as exc:
            if "No module named 'setuptools'" not in (exc.stderr or ""):
                raise SystemExit(f"build_slicer_payload: the wheel build failed:\n{exc.stderr}") from exc
            # No setuptools in this Python: let pip fetch the build backend (isolated build).
            subprocess.run(
                [python, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out.resolve()), str(tree)],
                check=True,
            )
            name = next(out.glob("medidiff-*.whl")).name
    return out / name


def wheel_metadata(wheel: Path) -> dict[str, object]:
    """Version, Requires-Python and the torch requirement from the wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(archive.read(meta_name).decode("utf-8"))
    torch = ""
    for requirement in meta.get_all("Requires-Dist") or []:
        text = requirement.split(";")[0].strip()
        if text.lower().startswith("torch") and not text[5:6].isalnum() and text[5:6] not in "-_.":
            torch = text[5:].strip().strip("()")
    return {
        "version": meta["Version"],
        "requires_python": meta.get("Requires-Python", ""),
        "torch_requirement": torch,
    }


def task_catalog(wheel: Path) -> dict[str, object]:
    """The task catalog of the built wheel's registry (``medidiff.tasks`` is torch-free pure Python)."""
    module_dir = Path(__file__).resolve().parents[1] / "slicer" / "MediDiff"
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(wheel)!r})\n"  # a wheel is a zip: importable as is
        f"sys.path.insert(1, {str(module_dir)!r})\n"
        "import medidiff, medidiff.tasks as tasks\n"
        "from MediDiffLib.catalog import from_registry\n"
        "print(json.dumps(from_registry(tasks, medidiff.__version__).to_json()))\n"
    )
    # -S first: nothing but the wheel and the standard library can answer (the registry is torch-free). If the
    # registry ever needs a third-party package, read it with site-packages (the wheel still comes first).
    for flags in (["-I", "-S"], ["-I"]):
        result = subprocess.run(
            [sys.executable, *flags, "-c", script],
            capture_output=True,
            text=True,
            check=False,
            cwd=tempfile.gettempdir(),
        )
        if result.returncode == 0:
            break
    else:
        raise SystemExit(f"build_slicer_payload: cannot read the task registry of {wheel}:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def source_revision(source: Path) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return result.stdout.strip()


def build_payload(source: Path, out: Path, python: str = sys.executable) -> Path:
    """Build the wheel and write the manifest; return the manifest's path."""
    wheel = build_wheel(source, out, python)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    manifest = {
        "distribution": "medidiff",
        **wheel_metadata(wheel),
        "wheel": wheel.name,
        "sha256": digest,
        "source_revision": source_revision(source),
        "catalog": task_catalog(wheel),
    }
    path = out / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the payload folder to (re)create")
    parser.add_argument(
        "--source",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="the medidiff source tree (default: this repository)",
    )
    parser.add_argument(
        "--python", default=sys.executable, help="the Python whose setuptools builds the wheel"
    )
    args = parser.parse_args(argv)
    print(build_payload(args.source.resolve(), args.out, args.python))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
