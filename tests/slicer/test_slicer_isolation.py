"""medidiff never pulls in Slicer, and the Slicer module's library never pulls in medidiff or Slicer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SLICER_MODULES = ("slicer", "qt", "ctk", "vtk", "MediDiffLib")


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
        import MediDiffLib.checks, MediDiffLib.command, MediDiffLib.dependencies
        import MediDiffLib.errors, MediDiffLib.process, MediDiffLib.workspace
        """,
        cwd=tmp_path,
        extra_path=module_dir,
    )
    assert "MediDiffLib" in roots
    # Heavy or Slicer-only packages would break the "explain that medidiff is missing" path in Slicer.
    forbidden = {"slicer", "qt", "ctk", "vtk", "medidiff", "torch", "numpy", "monai"}
    assert roots.isdisjoint(forbidden), roots & forbidden
