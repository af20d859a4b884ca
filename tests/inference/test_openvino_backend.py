"""The OpenVINO backend: the same network function as torch, cached per model, deterministic, chosen by
``--backend``; and a restoration through it agrees with the torch backend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import build_tiny_model

from medidiff.errors import ConfigError
from medidiff.inference.backends import choose_backend
from medidiff.inference.openvino_backend import OpenVINOModel, cache_dir, model_digest
from medidiff.nets.model import DiffusionModel


def _trained_like(seed: int = 0) -> DiffusionModel:
    """The tiny model with non-zero weights everywhere (an untrained U-Net outputs exactly 0)."""
    model = build_tiny_model(seed)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.05 * torch.randn_like(p, generator=None))
    model.bf16 = False
    return model


def test_openvino_f32_computes_the_torch_network() -> None:
    torch.manual_seed(0)
    model = _trained_like()
    ov = OpenVINOModel(model, precision="f32")
    for shape in [(16, 16, 16), (24, 16, 32)]:  # the window shape is free; the batch too
        x = torch.randn(3, 1, *shape, generator=torch.Generator().manual_seed(1))
        t = torch.tensor([0.02, 0.4, 0.9], dtype=torch.float64)
        with torch.no_grad():
            ref = model.predict(x, t)
        got = ov.predict(x, t)
        assert float(ref.x0.std()) > 0.05
        torch.testing.assert_close(got.x0, ref.x0, rtol=0, atol=1e-4)
        torch.testing.assert_close(got.eps, ref.eps, rtol=0, atol=1e-3)


def test_openvino_bf16_is_close_and_deterministic() -> None:
    torch.manual_seed(0)
    model = _trained_like()
    ov = OpenVINOModel(model, precision="bf16")
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.1, 0.5], dtype=torch.float64)
    with torch.no_grad():
        ref = model(x, t)
    first, second = ov.network_output(x, t), ov.network_output(x, t)
    assert torch.equal(first, second)
    assert float((first - ref).abs().max()) <= 0.05 * float(ref.abs().max()) + 1e-3


def test_the_ir_is_cached_per_model_and_rebuilt_for_new_weights() -> None:
    torch.manual_seed(0)
    model = _trained_like()
    first = OpenVINOModel(model, precision="f32")
    assert first.ir.is_file() and first.ir.is_relative_to(cache_dir())
    stamp = first.ir.stat().st_mtime_ns
    again = OpenVINOModel(model, precision="f32")
    assert again.ir == first.ir and again.ir.stat().st_mtime_ns == stamp  # read, not rebuilt
    with torch.no_grad():
        model.net.conv_in.conv.bias.add_(0.1)
    changed = OpenVINOModel(model, precision="f32")
    assert changed.digest != first.digest and changed.ir != first.ir
    assert model_digest(model) == changed.digest


def test_backend_choice() -> None:
    assert choose_backend("auto", "cpu") == "openvino"
    assert choose_backend("auto", "cuda") == "torch"
    assert choose_backend("torch", "cpu") == "torch"
    with pytest.raises(ConfigError, match="runs the network on the CPU"):
        choose_backend("openvino", "cuda")
    with pytest.raises(ConfigError, match="--backend must be one of"):
        choose_backend("onnx", "cpu")


def test_restoration_through_openvino_matches_torch_and_repeats(sample_nifti: Path) -> None:
    """Denoising a crop of the sample with the default model: OpenVINO in the CPU's own precision (bf16 on
    CPUs that have it) and torch fp32 give PSNRs within 0.05 dB of each other (the benchmark cases hold them
    to 0.02 dB: docs/benchmarks.md), and the same seed gives the same volume."""
    import medidiff
    from medidiff.degrade import degrade
    from medidiff.metrics import psnr

    clean = medidiff.read_volume(sample_nifti)
    clean = type(clean)(np.asarray(clean.data)[10:66, 14:78, 10:66], clean.affine, clean.meta, clean.source)
    noisy = degrade(clean, "gaussian", seed=3, sigma="5%").volume
    torch_model = medidiff.load_model("default", bf16=False)
    kwargs = {"task": "denoise", "progress": False, "seed": 4, "views": 1}
    by_torch = medidiff.restore(noisy, model=torch_model, backend="torch", **kwargs)
    by_ov = medidiff.restore(noisy, model=torch_model, backend="openvino", full_result=True, **kwargs)
    again = medidiff.restore(noisy, model=torch_model, backend="openvino", **kwargs)
    assert by_ov.info["backend"].startswith("openvino (")
    by_ov = by_ov.volume
    assert np.array_equal(by_ov.data, again.data)
    reference = np.asarray(clean.data, dtype=np.float64)
    gain = psnr(reference, by_torch.data) - psnr(reference, np.asarray(noisy.data))
    assert gain > 3.0
    assert abs(psnr(reference, by_ov.data) - psnr(reference, by_torch.data)) <= 0.05
    assert os.environ["MEDIDIFF_CACHE_DIR"]  # the tests' own cache (tests/conftest.py)


def test_openvino_is_used_without_its_usage_reporting(tmp_path: Path) -> None:
    """A fresh process with an empty HOME: exporting and running a network writes nothing to ~/intel (where
    openvino's telemetry keeps its client id) and leaves the telemetry package unimported."""
    import subprocess
    import sys

    code = (
        "import sys, torch; sys.path.insert(0, 'tests'); from helpers import build_tiny_model\n"
        "from medidiff.inference.openvino_backend import OpenVINOModel\n"
        "m = OpenVINOModel(build_tiny_model(0), precision='f32')\n"
        "m.network_output(torch.zeros(1, 1, 16, 16, 16), torch.ones(1))\n"
        "print(sys.modules.get('openvino_telemetry') is None)\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "MEDIDIFF_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("XDG_CACHE_HOME", None)
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert not (tmp_path / "intel").exists()
    assert (tmp_path / "cache" / "openvino").is_dir()


def test_loaded_models_are_cached_by_weights_and_threads_not_identity() -> None:
    """get_model on a loaded model: the same weights and config give the same compiled network, other
    weights (a model fine-tuned in place, or a new object that may reuse a freed one's id) a new one, and
    so does another torch thread count (the compiled network keeps the one it was built with)."""
    from medidiff.inference.pipeline import get_model

    torch.manual_seed(0)
    model = _trained_like()
    cpu = torch.device("cpu")
    first = get_model(model, cpu, "openvino")
    assert get_model(model, cpu, "openvino") is first
    assert get_model(_trained_like_copy(model), cpu, "openvino") is first  # equal weights, another object
    with torch.no_grad():
        model.net.conv_in.conv.bias.add_(0.1)
    assert get_model(model, cpu, "openvino") is not first
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        other = get_model(model, cpu, "openvino")
        assert other.threads == threads + 1
    finally:
        torch.set_num_threads(threads)


def _trained_like_copy(model: DiffusionModel) -> DiffusionModel:
    copy = build_tiny_model(0)
    copy.net.load_state_dict(model.net.state_dict())
    copy.bf16 = model.bf16
    return copy
