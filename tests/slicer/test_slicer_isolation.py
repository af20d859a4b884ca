"""medidiff never pulls in Slicer, and the Slicer module's library never pulls in medidiff or Slicer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SLICER_MODULES = ("slicer", "qt", "ctk", "vtk", "MediDiffLib")


def find_python(version: tuple[int, int]) -> str | None:
    """An interpreter of that version: pythonX.Y on PATH or a pyenv install (checked by running it)."""
    import glob
    import shutil

    name = f"{version[0]}.{version[1]}"
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv" / "versions" / f"{name}.*" / "bin" / "python")))
    candidates += [c for c in (shutil.which(f"python{name}"), f"/usr/bin/python{name}") if c]
    for candidate in candidates:
        try:
            result = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if result.returncode == 0 and result.stdout.strip() == name:
            return candidate
    return None


def loaded_roots(code: str, cwd: Path, extra_path: Path | None = None) -> set[str]:
    """Run ``code`` in a fresh interpreter and return the top-level names in its sys.modules."""
    prelude = f"import sys; sys.path.insert(0, {str(extra_path)!r})\n" if extra_path else ""
    script = (
        prelude
        + textwrap.dedent(code)
        + "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_importing_medidiff_and_its_cli_never_imports_slicer(repo_root: Path, tmp_path: Path) -> None:
    # Run outside the repository so the repo's `slicer/` folder cannot be picked up as a namespace package.
    roots = loaded_roots(
        """
        import medidiff
        import medidiff.cli.main
        import medidiff.progress
        medidiff.cli.main.build_parser()  # imports every registered subcommand module
        """,
        cwd=tmp_path,
    )
    assert "medidiff" in roots
    assert roots.isdisjoint(SLICER_MODULES), roots & set(SLICER_MODULES)


def test_medidiff_lib_imports_neither_slicer_nor_medidiff(module_dir: Path, tmp_path: Path) -> None:
    roots = loaded_roots(
        """
        import MediDiffLib.catalog, MediDiffLib.checks, MediDiffLib.command, MediDiffLib.dependencies
        import MediDiffLib.errors, MediDiffLib.process, MediDiffLib.workspace
        """,
        cwd=tmp_path,
        extra_path=module_dir,
    )
    assert "MediDiffLib" in roots
    # Heavy or Slicer-only packages would break the "explain that medidiff is missing" path in Slicer.
    forbidden = {"slicer", "qt", "ctk", "vtk", "medidiff", "torch", "numpy", "monai"}
    assert roots.isdisjoint(forbidden), roots & forbidden


def test_the_catalog_imports_only_the_torch_free_registry(module_dir: Path, tmp_path: Path) -> None:
    """Reading the task registry inside Slicer's process must not pull in torch, numpy or MONAI."""
    roots = loaded_roots(
        """
        from MediDiffLib.catalog import load_installed
        assert load_installed() is not None
        """,
        cwd=tmp_path,
        extra_path=module_dir,
    )
    assert "medidiff" in roots
    assert roots.isdisjoint({"torch", "numpy", "monai", "slicer"}), roots & {
        "torch",
        "numpy",
        "monai",
        "slicer",
    }


def test_the_library_loads_on_python_3_9_and_names_the_slicer_needed(
    module_dir: Path, tmp_path: Path
) -> None:
    """Slicer 5.4-5.8 embed Python 3.9: MediDiffLib must load there and produce the one gate message."""
    python = find_python((3, 9))
    if python is None:
        pytest.skip("no Python 3.9 interpreter on this machine (python3.9 or pyenv 3.9.18)")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(module_dir)!r})
        import MediDiffLib.catalog, MediDiffLib.checks, MediDiffLib.command, MediDiffLib.dependencies
        import MediDiffLib.errors, MediDiffLib.process, MediDiffLib.workspace
        print(MediDiffLib.dependencies.python_gate(sys.version_info))
        """
    )
    result = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "needs 3D Slicer 5.10 or newer" in result.stdout and "Python 3.9" in result.stdout
