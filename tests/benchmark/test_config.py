"""Where a benchmark config's relative volume paths are looked up: the current directory, then the config
file's own folder; never a guessed repository root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from medidiff.benchmark.config import load_config
from medidiff.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _config(folder: Path, volume_path: str) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "bench" / "quick.yaml").read_text())
    raw["volumes"][0]["path"] = volume_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_relative_to_the_config_folder_from_anywhere(
    tmp_path: Path, sample_nifti: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(sample_nifti, tmp_path / "v.nii.gz")
    config = _config(tmp_path / "configs" / "bench", "../../v.nii.gz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(config).volumes[0].path == str(tmp_path / "v.nii.gz")


def test_relative_to_the_current_directory_first(
    tmp_path: Path, sample_nifti: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cwd").mkdir()
    shutil.copy(sample_nifti, tmp_path / "cwd" / "v.nii.gz")
    config = _config(tmp_path / "conf", "v.nii.gz")
    shutil.copy(sample_nifti, tmp_path / "conf" / "v.nii.gz")
    monkeypatch.chdir(tmp_path / "cwd")
    assert load_config(config).volumes[0].path == str(tmp_path / "cwd" / "v.nii.gz")


def test_no_repository_root_is_guessed(
    tmp_path: Path, sample_nifti: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config in <root>/configs/bench/ naming a path relative to <root> is not found from elsewhere (the
    old rule took <root> as a base for such configs)."""
    shutil.copy(sample_nifti, tmp_path / "v.nii.gz")
    config = _config(tmp_path / "configs" / "bench", "v.nii.gz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ConfigError, match=r"benchmark volume 'v\.nii\.gz' not found \(looked in the current"):
        load_config(config)


@pytest.mark.parametrize("name", ["quick", "targets", "calibration_dev"])
def test_repository_configs_load_from_another_directory(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = REPO / "configs" / "bench" / f"{name}.yaml"
    monkeypatch.chdir(tmp_path)
    try:
        config = load_config(path)
    except ConfigError as exc:  # held-out and development volumes: outside the repository, or in dev packages
        if name != "quick" and ("not found" in str(exc) or "not installed" in str(exc)):
            pytest.skip(f"a held-out volume is not on this machine: {exc}")
        raise
    assert all(Path(v.path).is_file() for v in config.volumes)


def test_case_digest_ignores_targets_and_labels_only() -> None:
    """Resuming keys on what determines results: a new margin or label keeps them, a new seed does not."""
    import copy

    from medidiff.benchmark.config import Target

    case = load_config(REPO / "configs" / "bench" / "quick.yaml").cases()[0]  # the bundled sample: CI has it
    base = case.digest("default")
    relabelled = copy.deepcopy(case)
    relabelled.degradation.targets.append(Target("psnr", "bm4d", 0.3))
    relabelled.degradation.label += " (renamed)"
    relabelled.volume.label += " (renamed)"
    assert relabelled.digest("default") == base
    reseeded = copy.deepcopy(case)
    reseeded.degradation.seed += 1
    assert reseeded.digest("default") != base
    assert case.digest("other model") != base
