"""What the Slicer Extensions Index needs from this repository: metadata, URLs, catalog entry, licence."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from MediDiffLib.dependencies import load_payload
from PIL import Image

RAW = "https://raw.githubusercontent.com/"
SCHEMA = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
# slicer-extension-catalog-entry-schema-v1.0.2.json: required and allowed keys with their types.
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}
CATALOG_TYPES = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,
    "build_dependencies": list,
    "dicom_support_rule": str,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,
}


def cmake_settings(repo_root: Path) -> dict[str, str]:
    text = (repo_root / "CMakeLists.txt").read_text(encoding="utf-8")
    settings = dict(re.findall(r'^set\((\w+)\s+"([^"]*)"\)', text, flags=re.MULTILINE))
    # Expand ${VAR} references to earlier settings.
    for key, value in settings.items():
        settings[key] = re.sub(r"\$\{(\w+)\}", lambda m: settings.get(m.group(1), m.group(0)), value)
    return settings


def test_extension_metadata_urls_point_at_files_of_this_tree(repo_root: Path) -> None:
    settings = cmake_settings(repo_root)
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert settings[key].startswith("https://"), key
    repository = settings["MEDIDIFF_REPOSITORY"]
    owner_repo = repository.removeprefix("https://github.com/")
    assert settings["MEDIDIFF_RAW"] == f"{RAW}{owner_repo}/main"
    homepage = settings["EXTENSION_HOMEPAGE"].removeprefix(f"{repository}/blob/main/")
    assert (repo_root / homepage).is_file()
    for url in [settings["EXTENSION_ICONURL"], *settings["EXTENSION_SCREENSHOTURLS"].split()]:
        path = repo_root / url.removeprefix(f"{settings['MEDIDIFF_RAW']}/")
        assert path.is_file(), url
        with Image.open(path) as image:
            assert image.format == "PNG"
    with Image.open(
        repo_root / settings["EXTENSION_ICONURL"].removeprefix(f"{settings['MEDIDIFF_RAW']}/")
    ) as icon:
        assert icon.size == (128, 128)  # the Extensions Manager's icon size
    assert settings["EXTENSION_DEPENDS"] == "PyTorch"
    assert settings["EXTENSION_CATEGORY"]
    assert settings["EXTENSION_DESCRIPTION"]


def test_catalog_entry_builds_this_repository_from_its_root(repo_root: Path) -> None:
    entry = json.loads((repo_root / "MediDiff.json").read_text(encoding="utf-8"))
    assert entry["$schema"] == SCHEMA
    assert set(entry) >= CATALOG_REQUIRED
    assert set(entry) <= set(CATALOG_TYPES)
    for key, value in entry.items():
        assert isinstance(value, CATALOG_TYPES[key]), key
    settings = cmake_settings(repo_root)
    assert entry["scm_url"] == settings["MEDIDIFF_REPOSITORY"]
    assert entry["category"] == settings["EXTENSION_CATEGORY"]
    assert entry["build_dependencies"] == settings["EXTENSION_DEPENDS"].split()
    assert entry["build_subdirectory"] == "."
    assert (repo_root / "CMakeLists.txt").is_file()  # the index runs CMake here
    assert 1 <= entry["tier"] <= 5


def test_licence_at_the_root_is_the_packages(repo_root: Path) -> None:
    licence = (repo_root / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    assert 'license = { text = "Apache-2.0" }' in (repo_root / "pyproject.toml").read_text(encoding="utf-8")


def test_docs_show_the_screenshot(repo_root: Path) -> None:
    docs = (repo_root / "docs" / "slicer.md").read_text(encoding="utf-8")
    assert "img/slicer_restoration.png" in docs
    assert (repo_root / "docs" / "img" / "slicer_restoration.png").is_file()


MOCK_SLICER_CONFIG = """
set(Slicer_USE_FILE ${{CMAKE_CURRENT_LIST_DIR}}/UseSlicer.cmake)
set(Slicer_VERSION {version})
set(Slicer_EXTENSION_GENERATE_CONFIG ${{CMAKE_CURRENT_LIST_DIR}}/empty.cmake)
set(Slicer_EXTENSION_CPACK ${{CMAKE_CURRENT_LIST_DIR}}/empty.cmake)
"""
MOCK_USE_SLICER = """
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(PYTHON_EXECUTABLE {python})
macro(slicerMacroBuildScriptedModule)
endmacro()
macro(slicer_add_python_unittest)
endmacro()
"""


def mock_slicer(folder: Path, version: str) -> Path:
    """A stand-in for a Slicer build tree with only what the extension's CMake files use (no Slicer here)."""
    folder.mkdir(parents=True)
    (folder / "SlicerConfig.cmake").write_text(MOCK_SLICER_CONFIG.format(version=version))
    (folder / "UseSlicer.cmake").write_text(MOCK_USE_SLICER.format(python=sys.executable))
    (folder / "empty.cmake").write_text("")
    return folder


def test_cmake_builds_and_installs_the_payload_next_to_the_module(repo_root: Path, tmp_path: Path) -> None:
    """The extension's CMake files (from the repository root, as the index builds them) against a mock Slicer:
    the payload target builds the wheel and the install puts it where the installed module looks for it."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    slicer_dir = mock_slicer(tmp_path / "slicer", "5.10.0")
    build, prefix = tmp_path / "build", tmp_path / "install"
    run = {"capture_output": True, "text": True, "timeout": 300, "check": False}
    steps = [
        [cmake, "-S", str(repo_root), "-B", str(build), f"-DSlicer_DIR={slicer_dir}"],
        [cmake, "--build", str(build)],
        [cmake, "--install", str(build), "--prefix", str(prefix)],
    ]
    for step in steps:
        result = subprocess.run(step, **run)
        assert result.returncode == 0, result.stdout + result.stderr
    installed_module = prefix / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    payload = load_payload(installed_module)
    assert payload is not None and payload.wheel_path.is_file()
    assert payload.catalog is not None and "denoise" in payload.catalog.names

    old = mock_slicer(tmp_path / "old-slicer", "5.8.0")
    result = subprocess.run(
        [cmake, "-S", str(repo_root), "-B", str(tmp_path / "old"), f"-DSlicer_DIR={old}"], **run
    )
    assert result.returncode != 0 and "needs 3D Slicer 5.10 or newer" in result.stdout + result.stderr
