"""medidiff.datapaths: pkg: references, globs, relative-to-base lookups and one-line errors naming what is
missing; the training and benchmark configs resolve through it."""

from __future__ import annotations

from pathlib import Path

import nibabel
import pytest

from medidiff.datapaths import resolve_data_paths
from medidiff.errors import ConfigError

NIBABEL_DATA = Path(nibabel.__file__).parent / "tests" / "data"


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_pkg_reference_is_the_file_inside_the_installed_package() -> None:
    paths = resolve_data_paths("pkg:nibabel/tests/data/anatomical.nii")
    assert paths == [NIBABEL_DATA / "anatomical.nii"] and paths[0].is_file()


def test_pkg_glob_expands_sorted() -> None:
    paths = resolve_data_paths(["pkg:nibabel/tests/data/*.nii"])
    expected = sorted(NIBABEL_DATA.glob("*.nii"))
    assert len(expected) > 1 and paths == expected


def test_globs_plain_paths_and_directories_keep_entry_order(tmp_path: Path) -> None:
    _touch(tmp_path / "b.nii.gz", tmp_path / "a.nii.gz", tmp_path / "notes.txt", tmp_path / "dicom" / "1.dcm")
    entries = [str(tmp_path / "notes.txt"), str(tmp_path / "*.nii.gz"), str(tmp_path / "dicom")]
    assert resolve_data_paths(entries) == [
        tmp_path / "notes.txt",
        tmp_path / "a.nii.gz",
        tmp_path / "b.nii.gz",
        tmp_path / "dicom",
    ]


def test_relative_entries_try_the_working_directory_then_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, cwd = tmp_path / "repo", tmp_path / "elsewhere"
    _touch(base / "data" / "v1.nii", base / "data" / "v2.nii", base / "both.nii", cwd / "both.nii")
    monkeypatch.chdir(cwd)
    assert resolve_data_paths("data/v1.nii", base) == [base / "data" / "v1.nii"]
    assert resolve_data_paths("data/v*.nii", base) == [base / "data" / "v1.nii", base / "data" / "v2.nii"]
    assert resolve_data_paths("both.nii", base) == [Path("both.nii")]  # the working directory wins
    with pytest.raises(ConfigError, match="not found"):
        resolve_data_paths("data/v1.nii")  # without base only the working directory counts


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("absent.nii.gz", r"^benchmark volume 'absent\.nii\.gz' not found \(looked in the current dir"),
        ("/no/such/dir/*.nii", r"^benchmark volume '/no/such/dir/\*\.nii' not found$"),
        (
            "pkg:medidiff_no_such_package/x.nii",
            r"^benchmark volume 'pkg:medidiff_no_such_package/x.nii': package 'medidiff_no_such_package' "
            r"is not installed \(pip install medidiff_no_such_package\)$",
        ),
        ("pkg:nibabel/tests/data/absent.nii", r"^benchmark volume 'pkg:nibabel/tests/data/absent\.nii' not"),
        ([], r"^no benchmark volume listed$"),
    ],
)
def test_missing_data_is_one_line_naming_what(tmp_path: Path, entries: str | list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        resolve_data_paths(entries, tmp_path, what="benchmark volume")
    assert "\n" not in str(info.value)


def test_one_missing_entry_fails_the_whole_list(tmp_path: Path) -> None:
    _touch(tmp_path / "a.nii")
    with pytest.raises(ConfigError, match=r"^training data '.*b\.nii' not found$"):
        resolve_data_paths([str(tmp_path / "a.nii"), str(tmp_path / "b.nii")], what="training data")


def test_training_and_benchmark_configs_resolve_through_it(tmp_path: Path) -> None:
    from medidiff.benchmark.config import resolve_paths
    from medidiff.training.config import resolve_data_files

    _touch(tmp_path / "v.nii")
    assert resolve_data_files(["pkg:nibabel/tests/data/anatomical.nii"]) == [
        str(NIBABEL_DATA / "anatomical.nii")
    ]
    assert resolve_paths("v.nii", tmp_path) == [tmp_path / "v.nii"]
    with pytest.raises(ConfigError, match=r"^training data 'gone\.nii' not found$"):
        resolve_data_files(["gone.nii"])
    with pytest.raises(ConfigError, match=r"^benchmark volume 'gone\.nii' not found"):
        resolve_paths("gone.nii", tmp_path)
