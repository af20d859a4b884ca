"""`medidiff benchmark` end to end on the bundled sample, with a tiny untrained model (real subprocesses).

The quick config's four cases (one per task) run on a 32 x 32 x 40 crop; the slow classical methods (BM4D,
NLM) are left out here and covered by test_baselines.py. A tiny untrained network restores nothing, so
the checks are about the harness: tables, montages, timing and memory columns, resuming, isolation.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from medidiff.benchmark.config import load_config
from medidiff.errors import ConfigError

Run = Callable[..., subprocess.CompletedProcess[str]]
METHODS = "medidiff,tv,biharmonic,n4,cubic"


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, small_quick_config: Path, tiny_model: Path) -> Path:
    from tests.conftest import cli_env, medidiff_command

    out = tmp_path_factory.mktemp("bench")
    args = ["benchmark", "--config", small_quick_config, "--out", out, "--model", tiny_model]
    args += ["--methods", METHODS, "--steps", "2", "--isolation", "inprocess"]
    proc = subprocess.run(medidiff_command(*args), env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "medidiff-progress benchmark 4/4" in proc.stderr  # one progress step per case
    assert "4 cases, 8 runs, 0 reused, 0 failed" in proc.stdout
    return out


def test_tables_have_every_case_and_method(first_run: Path) -> None:
    rows = _rows(first_run)
    expected = {("sample__denoise-gaussian-5", m) for m in ("input", "medidiff", "tv")} | {
        ("sample__inpaint-holes-slices", m) for m in ("input", "medidiff", "biharmonic")
    }
    expected |= {("sample__restore-bias", m) for m in ("input", "medidiff", "n4")}
    expected |= {("sample__restore-thick", m) for m in ("input", "medidiff", "cubic")}
    assert {(r["case"], r["method"]) for r in rows} == expected
    by = {(r["case"], r["method"]): r for r in rows}
    for (_case, method), row in by.items():
        assert row["error"] == ""
        assert math.isfinite(float(row["psnr"])) and -1 <= float(row["ssim"]) <= 1  # untrained: any value
        if method != "input":
            assert float(row["seconds"]) > 0 and float(row["peak_rss_mib"]) > 50
    # the network-evaluation budget: Tweedie denoising is 1 per view (2); the chains take the --steps budget
    assert by[("sample__denoise-gaussian-5", "medidiff")]["network_evaluations"] == "2"
    assert int(by[("sample__inpaint-holes-slices", "medidiff")]["network_evaluations"]) <= 2 * 2  # 2 samples
    assert by[("sample__denoise-gaussian-5", "tv")]["network_evaluations"] == "0"
    # region columns: inpainting is scored inside the missing voxels, the bias case after a scale fit
    inpaint = by[("sample__inpaint-holes-slices", "biharmonic")]
    assert inpaint["region"] == "missing" and float(inpaint["psnr_region"]) < float(inpaint["psnr"])
    assert by[("sample__restore-bias", "n4")]["psnr_fit"] != ""
    assert by[("sample__denoise-gaussian-5", "tv")]["psnr_fit"] == ""
    # the baselines do their job even here: TV beats the noisy input, biharmonic the zero-filled holes
    assert float(by[("sample__denoise-gaussian-5", "tv")]["psnr"]) > float(
        by[("sample__denoise-gaussian-5", "input")]["psnr"]
    )
    assert float(inpaint["psnr_region"]) > float(by[("sample__inpaint-holes-slices", "input")]["psnr_region"])
    markdown = (first_run / "results.md").read_text()
    assert "| case | method | PSNR (dB) |" in markdown and "montages/sample__restore-thick.png" in markdown


def test_montages_are_written(first_run: Path) -> None:
    widths = {}
    for case in ("denoise-gaussian-5", "inpaint-holes-slices", "restore-bias", "restore-thick"):
        with Image.open(first_run / "montages" / f"sample__{case}.png") as image:
            assert image.format == "PNG"
            # reference, degraded and two methods side by side, six rows of views
            assert image.width > 4 * 100 and image.height > 6 * 60
            widths[case] = image.width
    # inpainting drew two posterior samples, restore its default 4 chains: their std is one more column (so
    # both have reference, degraded, medidiff, std and one baseline), and a volume next to the output
    assert widths["inpaint-holes-slices"] == widths["restore-bias"] > 4 * 100
    for case in ("inpaint-holes-slices", "restore-bias"):
        assert (first_run / "cases" / f"sample__{case}" / "medidiff_uncertainty.nii.gz").exists()


def test_outputs_are_on_the_reference_grid(first_run: Path) -> None:
    import nibabel as nib

    folder = first_run / "cases" / "sample__restore-thick"
    reference = nib.load(str(folder / "reference.nii.gz"))
    degraded = nib.load(str(folder / "degraded.nii.gz"))
    assert degraded.shape[2] * 4 == reference.shape[2]  # thick slices: a quarter of the slices
    for method in ("medidiff", "cubic"):
        assert nib.load(str(folder / f"{method}.nii.gz")).shape == reference.shape
    record = json.loads((folder / "case.json").read_text())
    assert record["truth"]["factor"] == 4 and record["records"][0]["kind"] == "thick"


def test_second_run_resumes(
    first_run: Path, small_quick_config: Path, tiny_model: Path, run_cli: Run
) -> None:
    results = sorted(first_run.glob("cases/*/*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    args = ["benchmark", "--config", small_quick_config, "--out", first_run, "--model", tiny_model]
    proc = run_cli(*args, "--methods", METHODS, "--steps", "2", "--isolation", "inprocess")
    assert proc.returncode == 0, proc.stderr
    assert "0 runs, 8 reused" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in results} == stamps
    assert len(_rows(first_run)) == 12


def test_changed_settings_rerun_only_that_case(
    tmp_path: Path, small_quick_config: Path, tiny_model: Path, run_cli: Run
) -> None:
    """The worker runs in a fresh process (ru_maxrss); a different --steps changes the case's digest."""
    from medidiff.benchmark.runner import RunOptions, run_benchmark

    out = tmp_path / "b"
    args = ["benchmark", "--config", small_quick_config, "--out", out, "--model", tiny_model]
    proc = run_cli(*args, "--cases", "*denoise*", "--methods", "tv", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""
    rows = _rows(out)
    assert [r["method"] for r in rows] == ["input", "tv"]
    assert rows[1]["memory_measure"] == "ru_maxrss"  # the config's default isolation: a fresh process
    record = out / "cases" / "sample__denoise-gaussian-5" / "tv.json"
    before = record.stat().st_mtime_ns
    # The reruns below test the digest only: in this process (a fresh one costs seconds of imports).
    options = RunOptions(
        out, str(tiny_model), quiet=True, cases=["*denoise*"], methods=["tv"], isolation="inprocess"
    )
    assert run_benchmark(load_config(small_quick_config), options).reused == 1
    assert record.stat().st_mtime_ns == before
    options.steps = 3
    summary = run_benchmark(load_config(small_quick_config), options)
    assert (summary.ran, summary.reused) == (1, 0)
    assert record.stat().st_mtime_ns != before


def test_failed_method_is_reported_in_one_line(
    tmp_path: Path, small_quick_config: Path, run_cli: Run
) -> None:
    missing = tmp_path / "nope.safetensors"
    args = ["benchmark", "--config", small_quick_config, "--out", tmp_path / "c", "--model", missing]
    proc = run_cli(*args, "--cases", "*denoise*", "--methods", "medidiff", "--isolation", "inprocess")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        lines[-1].startswith("medidiff: error: 1 benchmark runs failed")
        and "model weights not found" in lines[-1]
    )
    row = next(r for r in _rows(tmp_path / "c") if r["method"] == "medidiff")
    assert "model weights not found" in row["error"]


def test_missing_bm4d_is_one_line_before_any_work(
    tmp_path: Path,
    small_quick_config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without the optional bm4d package, a run that selects BM4D stops at once (exit 2, one line naming the
    package and the methods that can run) and writes nothing; leaving BM4D out runs."""
    import sys

    from medidiff.cli.main import main

    monkeypatch.setitem(sys.modules, "bm4d", None)  # as if not installed: import and find_spec fail
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # main() sets it otherwise, for the rest of the session
    out = tmp_path / "b"
    args = ["benchmark", "--config", str(small_quick_config), "--out", str(out), "--cases", "*denoise*"]
    assert main([*args, "--methods", "bm4d,tv", "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "medidiff: error: benchmark method bm4d needs the bm4d package (pip install bm4d), which is not "
        "installed; to run without it: --methods tv"
    ]
    assert not out.exists()
    assert main([*args, "--methods", "tv", "--isolation", "inprocess", "--quiet"]) == 0
    assert [r["method"] for r in _rows(out)] == ["input", "tv"]


def test_config_errors(tmp_path: Path, small_quick_config: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = small_quick_config.read_text()
    bad.write_text(text.replace("- biharmonic", "- magic"))
    with pytest.raises(ConfigError, match="unknown methods \\['magic'\\]"):
        load_config(bad)
    bad.write_text(text.replace("mni152_t1_2mm.nii.gz", "absent.nii.gz"))
    with pytest.raises(ConfigError, match=r"absent\.nii\.gz' not found"):
        load_config(bad)
    assert [c.id for c in load_config(small_quick_config).cases()] == [
        "sample__denoise-gaussian-5",
        "sample__inpaint-holes-slices",
        "sample__restore-bias",
        "sample__restore-thick",
    ]


def test_retrained_model_reruns_medidiff_and_reuses_the_baselines(
    tmp_path: Path, small_quick_config: Path, tiny_model: Path
) -> None:
    """A model retrained under the same path (as ``default`` is) changes only medidiff's record digest."""
    import shutil

    import torch

    from medidiff.benchmark.runner import RunOptions, run_benchmark
    from medidiff.nets.checkpoint import load_model, save_model

    model = tmp_path / "m" / "tiny.safetensors"
    model.parent.mkdir()
    shutil.copy(tiny_model, model)
    shutil.copy(tiny_model.with_suffix(".json"), model.with_suffix(".json"))
    options = RunOptions(
        tmp_path / "b",
        str(model),
        quiet=True,
        cases=["*denoise*"],
        methods=["medidiff", "tv"],
        steps=2,
        isolation="inprocess",  # the digests are the point here, not the worker process
    )
    config = load_config(small_quick_config)
    assert run_benchmark(config, options).ran == 2
    assert run_benchmark(config, options).reused == 2
    net = load_model(model)
    with torch.no_grad():
        next(net.net.parameters()).add_(0.01)
    save_model(net, model)
    summary = run_benchmark(config, options)
    assert (summary.ran, summary.reused) == (1, 1)


def test_code_digest_changes_with_any_source_file(tmp_path: Path) -> None:
    """medidiff's records are keyed by its code too: an edit anywhere in the package reruns it."""
    from medidiff.benchmark.runner import code_digest

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "notes.txt").write_text("not code")
    first = code_digest(pkg)
    assert code_digest(pkg) == first
    (pkg / "notes.txt").write_text("still not code")
    assert code_digest(pkg) == first
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert code_digest(pkg) != first
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    (pkg / "sub" / "b.py").rename(pkg / "sub" / "c.py")
    assert code_digest(pkg) != first
    assert len(code_digest()) == 64
