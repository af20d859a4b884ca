"""Data-parallel training under a real ``torchrun`` (2 CPU processes, gloo).

The runs use a tiny U-Net ((8, 16) channels) on 16^3 patches so that a 2-process run takes seconds; what is
checked is the distributed machinery: synchronised replicas, rank-0-only files, resume on every rank, and
equivalence with a single process that sees the same global batches.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from medidiff.training.checkpoint import tensors_digest
from medidiff.training.config import load_config
from medidiff.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "train" / "smoke.yaml"
SAMPLE = ROOT / "data_samples" / "mni152_t1_2mm.nii.gz"
TINY = [
    "model.unet={channels: [8, 16], num_res_blocks: 1, attention_levels: [false, false], norm_num_groups: 8}",
    "model.patch_size=[16, 16, 16]",
    "optim.batch_size=1",
    "optim.warmup_steps=1",
    "run.num_workers=0",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(
    env: dict[str, str], *args: str | Path, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node 2 ARGS`` on a free port (2 CPU processes, one thread each)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(_free_port()), *map(str, args),
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _two_volumes(tmp_path: Path) -> list[Path]:
    """The 2 mm sample and a mirrored copy: two files, so each rank reads its own volume."""
    import nibabel as nib

    image: Any = nib.load(SAMPLE)
    mirrored = tmp_path / "mirrored.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[::-1].copy(), image.affine), mirrored)
    return [SAMPLE, mirrored]


def _state(run: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    meta = json.loads((run / "train_state.json").read_text())
    return meta, load_file(str(run / "train_state.safetensors"))


def test_torchrun_keeps_replicas_identical_and_resumes_on_every_rank(
    tmp_path: Path, medidiff_env: dict[str, str]
) -> None:
    run = tmp_path / "run"
    files = json.dumps([str(p) for p in _two_volumes(tmp_path)])
    train: list[str | Path] = ["-m", "medidiff", "train", "--config", SMOKE]
    common: list[str | Path] = [*TINY, f"data.files={files}", f"run.out_dir={run}",
              "run.checkpoint_every=2", "run.log_every=2"]  # fmt: skip
    first = _torchrun(medidiff_env, *train, *common, "optim.steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    meta, tensors = _state(run)
    assert meta["step"] == 4 and meta["world_size"] == 2
    # Each rank hashed its own weights and EMA in memory: the replicas are bit-identical, and equal to the
    # state rank 0 wrote. Ranks saw different patches, so only synchronised gradients can explain this.
    digests = meta["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] == tensors_digest(tensors)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4]  # written once (rank 0), not once per rank
    assert not list(run.glob(".*")), "no temporary files left behind"

    # Resume: rank 0 reads the state and sends it to rank 1. Had rank 1 kept a fresh optimiser (Adam moments)
    # or EMA, its weights or EMA would differ from rank 0's after the first resumed step.
    second = _torchrun(medidiff_env, *train, "--resume", *common, "optim.steps=6")
    assert second.returncode == 0, second.stderr[-3000:]
    meta2, tensors2 = _state(run)
    assert meta2["step"] == 6
    assert meta2["replica_digests"][0] == meta2["replica_digests"][1] == tensors_digest(tensors2)
    assert tensors_digest(tensors2) != tensors_digest(tensors)
    # The EMA continued (2 more averages), not restarted; Adam's step count continued from 4.
    assert torch.equal(tensors2["ema.n_averaged"], tensors["ema.n_averaged"] + 2)
    assert int(tensors2["optim.0.step"]) == 6
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [2, 4, 6]
    assert json.loads((run / "model.json").read_text())["training"]["steps"] == 6


@pytest.mark.slow
def test_starting_over_an_existing_run_fails_on_every_rank_with_one_message(
    tmp_path: Path, medidiff_env: dict[str, str]
) -> None:
    # Rank 0 decides and tells the others, so no rank trains on while rank 0 has stopped.
    run = tmp_path / "run"
    run.mkdir()
    (run / "train_state.json").write_text("{}")
    proc = _torchrun(medidiff_env, "-m", "medidiff", "train", "--config", SMOKE, *TINY, f"run.out_dir={run}")
    assert proc.returncode != 0
    assert proc.stderr.count("already holds a training run; use --resume") == 2


PROBE = '''
"""Run medidiff's trainer on fixed patches with per-sample noise and times (DDP equivalence test helper).

Sample k of the stream is the same tensor whichever rank draws it, and its noise and time are derived from its
bytes, so 2 ranks x batch 1 and 1 process x batch 2 compute the same global batches.
"""
import hashlib
import json
import sys

import torch

from medidiff.diffusion.predictions import expand_like, training_target
from medidiff.training import trainer


class FixedPatches(torch.utils.data.IterableDataset):
    def __init__(self, cfg, seed=0, rank=0, world_size=1):
        super().__init__()
        self.rank, self.world, self.size = rank, world_size, tuple(cfg.patch_size)

    def __iter__(self):
        patches = torch.rand(16, 1, *self.size, generator=torch.Generator().manual_seed(1234)) * 2 - 1
        index = self.rank
        while True:
            yield patches[index % len(patches)]
            index += self.world


def per_sample_loss(model, core, x0, t, generator):
    times, noise = [], []
    for sample in x0:
        seed = int.from_bytes(hashlib.sha256(sample.numpy().tobytes()).digest()[:6], "little")
        g = torch.Generator().manual_seed(seed)
        times.append(trainer.sample_times(core.sde, 1, trainer.OptimConfig(), g))
        noise.append(torch.randn(sample.shape, generator=g))
    t, eps = torch.cat(times), torch.stack(noise)
    alpha, sigma = (c.float() for c in core.sde.coefficients(t))
    x_t = expand_like(alpha, x0) * x0 + expand_like(sigma, x0) * eps
    target = training_target(x0, eps, alpha, sigma, core.prediction_type)
    return torch.mean((model(x_t, t) - target) ** 2)


def run(raw):
    trainer.PatchDataset = FixedPatches
    trainer.diffusion_loss = per_sample_loss
    return trainer.train(trainer.TrainConfig.from_dict(raw), quiet=True)


if __name__ == "__main__":
    run(json.loads(open(sys.argv[1]).read()))
'''


def _load_probe(path: Path) -> ModuleType:
    path.write_text(PROBE)
    spec = importlib.util.spec_from_file_location("ddp_probe", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_same_global_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, medidiff_env: dict[str, str]
) -> None:
    from medidiff.nets.model import DiffusionModel
    from medidiff.training import trainer

    def config(out: Path, batch: int) -> dict[str, Any]:
        overrides = [*TINY, "model.bf16=false", f"optim.batch_size={batch}", "optim.steps=3",
                     "optim.lr=1.0e-3", "run.checkpoint_every=100", f"run.out_dir={out}",
                     f"data.files={json.dumps([str(SAMPLE)])}"]  # fmt: skip
        raw = load_config(SMOKE, overrides)
        TrainConfig.from_dict(raw)  # validates the overrides
        return raw

    probe = _load_probe(tmp_path / "ddp_probe.py")
    ddp_config = tmp_path / "ddp.json"
    ddp_config.write_text(json.dumps(config(tmp_path / "ddp", batch=1)))
    proc = _torchrun(medidiff_env, tmp_path / "ddp_probe.py", ddp_config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    monkeypatch.setattr(trainer, "PatchDataset", probe.FixedPatches)
    monkeypatch.setattr(trainer, "diffusion_loss", probe.per_sample_loss)
    single_cfg = TrainConfig.from_dict(config(tmp_path / "single", batch=2))
    trainer.train(single_cfg, quiet=True)
    _, ddp = _state(tmp_path / "ddp")
    _, single = _state(tmp_path / "single")
    torch.manual_seed(single_cfg.run.seed)  # the trainer's initialisation
    params = dict(DiffusionModel.from_config(single_cfg.model).net.named_parameters())
    # Adam's first moments are the averaged gradients: identical up to float rounding.
    moments = [k for k in single if k.endswith(".exp_avg")]
    assert len(moments) == len(params)
    scale = max(float(single[k].abs().max()) for k in moments)
    for key in moments:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-3, atol=1e-5 * scale, msg=key)
    moved = max(float((single[f"net.{n}"] - p.detach()).abs().max()) for n, p in params.items())
    apart = torch.cat([(single[f"net.{n}"] - ddp[f"net.{n}"]).abs().flatten() for n in params])
    # Three Adam steps of lr 1e-3 move weights by up to 3e-3, identically in both runs; the only exceptions
    # are a few biases whose gradient is ~0 (followed by a GroupNorm), where Adam amplifies rounding noise.
    assert moved > 1e-3 and float((apart > 1e-6).float().mean()) < 1e-3, (moved, apart.max())


class _RecordingDataset:
    """PatchDataset recording which volumes it reads (synthetic 24^3 volumes, fixed per path)."""

    @staticmethod
    def make(files: list[str], rank: int, world: int, read: list[str]) -> Any:
        from medidiff.training.data import PatchDataConfig, PatchDataset

        class Recording(PatchDataset):
            def _volume(self, path: str) -> dict[str, Any]:
                read.append(path)
                image = torch.rand(1, 24, 24, 24, generator=torch.Generator().manual_seed(ord(path)))
                return {"image": image, "label": (image > 0.1).to(torch.uint8), "spacing": np.ones(3)}

        cfg = PatchDataConfig(files=files, patch_size=(8, 8, 8), samples_per_volume=1)
        return Recording(cfg, seed=3, rank=rank, world_size=world)


@pytest.mark.parametrize(("n_files", "expected"), [(4, [["a", "c"], ["b", "d"]]), (1, [["a"], ["a"]])])
def test_each_rank_reads_its_own_volumes_and_draws_its_own_patches(
    n_files: int, expected: list[list[str]]
) -> None:
    files = ["a", "b", "c", "d"][:n_files]
    streams = []
    for rank in (0, 1):
        read: list[str] = []
        stream = iter(_RecordingDataset.make(files, rank, 2, read))
        streams.append(torch.stack([next(stream) for _ in range(12)]))
        assert sorted(set(read)) == expected[rank]
    assert streams[0].shape == (12, 1, 8, 8, 8) and not torch.equal(streams[0], streams[1])
