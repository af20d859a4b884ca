"""Training smoke test on real patches (the nilearn MNI152 T1), save/load and resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from medidiff.training.config import load_config, resolve_data_files
from medidiff.training.trainer import TrainConfig, diffusion_loss, train

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "train" / "smoke.yaml"
TRAINED_STEPS = 100


def _config(tmp_path: Path, steps: int, **extra: str) -> TrainConfig:
    overrides = [
        f"run.out_dir={tmp_path / 'run'}",
        "model.patch_size=[24, 24, 24]",  # the smoke config's 32^3 costs 2.4x the time for the same checks
        f"optim.steps={steps}",
        "run.checkpoint_every=1000",
        *(f"{k}={v}" for k, v in extra.items()),
    ]
    cfg = TrainConfig.from_dict(load_config(SMOKE, overrides))
    cfg.data.files = resolve_data_files(cfg.data.files)
    return cfg


def _fixed_batch_loss(model_path: Path, cfg: TrainConfig) -> float:
    """Loss of a saved model on a fixed batch of real patches at fixed times and noise."""
    from medidiff.nets.checkpoint import load_model
    from medidiff.training.data import PatchDataset

    model = load_model(model_path)
    stream = iter(PatchDataset(cfg.data, seed=12345))
    x0 = torch.stack([next(stream) for _ in range(8)])
    t = torch.linspace(0.02, 0.5, 8, dtype=torch.float64)
    with torch.no_grad():
        return float(diffusion_loss(model, model, x0, t, torch.Generator().manual_seed(0)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainConfig]:
    tmp = tmp_path_factory.mktemp("train")
    cfg = _config(tmp, steps=1, **{"optim.lr": "0.0"})
    first = train(cfg, quiet=True)  # an untrained (zero-output) export: the baseline
    baseline = _fixed_batch_loss(first, cfg)
    # 100 steps with a shorter EMA than the smoke config's 0.98 (whose export still lags the weights by about
    # 50 steps). Loss ratio on a 2-core AVX2 CPU: 0.60 in 40 s with 24^3 patches; 0.59 in 69 s with the smoke
    # config's 32^3; 0.57 in 97 s after 150 steps of 32^3 at 0.98.
    cfg = _config(tmp, steps=TRAINED_STEPS, **{"optim.ema_decay": "0.95"})
    path = train(cfg, resume=True, quiet=True)
    return path, cfg, baseline  # type: ignore[return-value]


def test_training_lowers_the_loss_clearly_on_real_patches(trained) -> None:  # type: ignore[no-untyped-def]
    path, cfg, baseline = trained
    after = _fixed_batch_loss(path, cfg)
    assert after < 0.65 * baseline, (baseline, after)


def test_checkpoint_files_and_history(trained) -> None:  # type: ignore[no-untyped-def]
    path, cfg, _ = trained
    run = Path(cfg.run.out_dir)
    meta = json.loads((run / "train_state.json").read_text())
    assert meta["step"] == TRAINED_STEPS
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == TRAINED_STEPS and history[-1]["voxels_per_s"] > 0
    model_json = json.loads(path.with_suffix(".json").read_text())
    assert model_json["training"]["steps"] == TRAINED_STEPS


def test_a_run_can_start_from_an_exported_model(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """run.init_from: a fine-tune starts at the source's weights (not at random) and records its origin."""
    from medidiff.errors import ModelError

    source, cfg, baseline = trained
    source_loss = _fixed_batch_loss(source, cfg)
    # One step at learning rate 0: the export holds the source's weights exactly, so the same loss.
    tuned = train(_config(tmp_path, steps=1, **{"optim.lr": "0.0", "run.init_from": str(source)}), quiet=True)
    assert _fixed_batch_loss(tuned, cfg) == pytest.approx(source_loss, rel=1e-6)
    assert source_loss < 0.65 * baseline  # the trained source, far from a fresh init's loss
    training = json.loads(tuned.with_suffix(".json").read_text())["training"]
    assert training["init_from"] == str(source) and training["steps"] == 1
    assert training["init_steps"] == TRAINED_STEPS
    # Resumed after the source was replaced (as when a snapshot of this run ships as the default), the run
    # still records the start it began from, not the replacement's step count.
    source_json = source.with_suffix(".json")
    original = source_json.read_text()
    try:
        replaced = json.loads(original)
        replaced["training"]["steps"] = 12345
        source_json.write_text(json.dumps(replaced))
        overrides = {"optim.lr": "0.0", "run.init_from": str(source)}
        resumed = train(_config(tmp_path, steps=2, **overrides), resume=True, quiet=True)
    finally:
        source_json.write_text(original)
    training = json.loads(resumed.with_suffix(".json").read_text())["training"]
    assert training["steps"] == 2 and training["init_steps"] == TRAINED_STEPS
    # A source of another shape (the embedded default: wider channels, 48^3 patches) is refused clearly.
    other = _config(tmp_path / "other", steps=1, **{"run.init_from": "default"})
    with pytest.raises(ModelError, match="network differs"):
        train(other, quiet=True)


def test_resume_restores_state_and_continues(tmp_path: Path) -> None:
    from medidiff.nets.ema import make_ema
    from medidiff.nets.model import DiffusionModel
    from medidiff.training.checkpoint import load_train_state

    cfg = _config(tmp_path, steps=6)
    train(cfg, quiet=True)
    run = Path(cfg.run.out_dir)
    saved = (run / "train_state.safetensors").read_bytes()
    # A fresh model/optimiser restored from disk holds exactly the saved tensors.
    core = DiffusionModel.from_config(cfg.model)
    ema = make_ema(core.net, cfg.optim.ema_decay)
    opt = torch.optim.AdamW(core.net.parameters())
    meta = load_train_state(run, core.net, ema, opt)
    assert meta["step"] == 6 and len(opt.state) == len(list(core.net.parameters()))
    cfg = _config(tmp_path, steps=9)
    train(cfg, resume=True, quiet=True)
    assert json.loads((run / "train_state.json").read_text())["step"] == 9
    assert (run / "train_state.safetensors").read_bytes() != saved
    # Starting over an existing run without --resume is refused.
    from medidiff.errors import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        train(_config(tmp_path, steps=3), quiet=True)


def test_train_cli_runs_in_a_subprocess(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "medidiff",
            "train",
            "--config",
            str(SMOKE),
            "--quiet",
            f"run.out_dir={tmp_path / 'cli'}",
            "optim.steps=2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    # The model keeps the config's portable specs, not this machine's site-packages path.
    recorded = json.loads((tmp_path / "cli" / "model.json").read_text())["training"]["files"]
    assert recorded == ["pkg:nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"]
    bad = subprocess.run(
        [sys.executable, "-m", "medidiff", "train", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not found" in bad.stderr


def test_train_cli_finds_data_next_to_its_config_from_another_directory(tmp_path: Path) -> None:
    """A relative data entry the current directory lacks is looked up next to the config file (as ``from:``
    includes are); the model records the entry as written; a name found in neither place is one line."""
    import shutil
    import subprocess

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "data_samples" / "mni152_t1_2mm.nii.gz", project / "t1.nii.gz")
    text = SMOKE.read_text().replace("../models/small.yaml", str(ROOT / "configs" / "models" / "small.yaml"))
    text = text.replace(
        '["pkg:nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"]', '["t1.nii.gz"]'
    )
    assert '["t1.nii.gz"]' in text
    (project / "train.yaml").write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [sys.executable, "-m", "medidiff", "train", "--config", str(project / "train.yaml"), "--quiet"]
    proc = subprocess.run(
        [*command, f"run.out_dir={tmp_path / 'run'}", "optim.steps=1"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "run" / "model.json").read_text())["training"]["files"] == ["t1.nii.gz"]
    missing = subprocess.run(
        [*command, "data.files=[nope.nii.gz]"], cwd=elsewhere, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "'nope.nii.gz' not found" in missing.stderr and str(project) in missing.stderr


def test_config_values_are_type_checked_and_coerced() -> None:
    from medidiff.errors import ConfigError

    cfg = TrainConfig.from_dict(load_config(SMOKE, ["optim.lr=1e-3", "data.spacing_range=[1, 2]"]))
    assert cfg.optim.lr == 1e-3 and cfg.data.spacing_range == (1.0, 2.0)  # YAML reads 1e-3 as a string
    with pytest.raises(ConfigError, match=r"optim\.steps"):
        TrainConfig.from_dict(load_config(SMOKE, ["optim.steps=many"]))
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict(load_config(SMOKE, ["optim.stepz=3"]))


def test_learning_rate_warms_up_holds_and_decays_to_zero() -> None:
    from medidiff.training.trainer import OptimConfig, learning_rate

    cfg = OptimConfig(steps=1000, lr=1e-3, warmup_steps=100, decay_steps=200)
    assert learning_rate(cfg, 0) == pytest.approx(1e-5)
    assert learning_rate(cfg, 500) == pytest.approx(1e-3)
    assert learning_rate(cfg, 900) == pytest.approx(5e-4)
    assert learning_rate(cfg, 1000) == 0.0
    assert learning_rate(OptimConfig(steps=1000, lr=1e-3, warmup_steps=1), 999) == pytest.approx(1e-3)
