"""Model files: safetensors + JSON round trip, and refusal of anything else (never unpickles)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from helpers import build_tiny_model

from medidiff.errors import ModelError
from medidiff.nets.checkpoint import load_model, save_model


def test_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    model = build_tiny_model()
    path = save_model(model, tmp_path / "m.safetensors", extra={"normalization": {"lower_percentile": 1.0}})
    loaded = load_model(path)
    assert loaded.channels_last  # on a CPU (faster convolutions); the original, too, so the sums match
    model.use_channels_last()
    x, t = torch.randn(2, 1, 16, 16, 16), torch.tensor([0.1, 0.7])
    with torch.no_grad():
        a, b = model.predict(x, t), loaded.predict(x, t)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.eps, b.eps)
    assert loaded.prediction_type == "v" and loaded.patch_size == (16, 16, 16)
    assert loaded.config["normalization"] == {"lower_percentile": 1.0}
    # Loading through the directory and through the JSON path resolves the same files.
    assert load_model(tmp_path).config["source"] == load_model(tmp_path / "m.json").config["source"]


def test_pickled_checkpoint_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (marker.write_text, ("x",))

    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelError, match="pickled"):
        load_model(path)
    assert not marker.exists()


def test_foreign_safetensors_without_config_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelError, match="config not found"):
        load_model(tmp_path / "other.safetensors")
    (tmp_path / "other.json").write_text(json.dumps({"architecture": "something else"}))
    with pytest.raises(ModelError, match="not a medidiff model config"):
        load_model(tmp_path / "other.safetensors")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    path = save_model(build_tiny_model(), tmp_path / "m.safetensors")
    config = json.loads(path.with_suffix(".json").read_text())
    config["model"]["unet"]["channels"] = [16, 32]
    path.with_suffix(".json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"shape|do not match"):
        load_model(path)


def test_corrupt_weights_are_refused(tmp_path: Path) -> None:
    path = save_model(build_tiny_model(), tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelError, match="unreadable"):
        load_model(path)
