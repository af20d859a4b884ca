"""The `medidiff restore` command line the Slicer module builds from its parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from MediDiffLib.command import (
    RestoreParameters,
    build_restore_argv,
    parse_degradations,
    parse_sigma,
    validate,
)
from MediDiffLib.errors import ParameterError

PY = ("/opt/slicer/bin/PythonSlicer", "-m", "medidiff")


def test_minimal_denoise_uses_cli_defaults() -> None:
    argv = build_restore_argv(RestoreParameters("in.nrrd", "out.nrrd"), executable=PY)
    assert argv == [*PY, "restore", "in.nrrd", "out.nrrd", "--task", "denoise"]


def test_full_denoise_with_samples_and_uncertainty(tmp_path: Path) -> None:
    params = RestoreParameters(
        input_path=tmp_path / "input.nrrd",
        output_path=tmp_path / "output.nrrd",
        task="denoise",
        noise="rician",
        sigma="5 %",
        model="/models/brain.safetensors",
        steps=20,
        samples=4,
        uncertainty_path=tmp_path / "std.nrrd",
        seed=7,
        device="cpu",
    )
    argv = build_restore_argv(params)
    assert argv == [
        "medidiff",
        "restore",
        str(tmp_path / "input.nrrd"),
        str(tmp_path / "output.nrrd"),
        "--task",
        "denoise",
        "--noise",
        "rician",
        "--sigma",
        "5%",
        "--model",
        "/models/brain.safetensors",
        "--steps",
        "20",
        "--samples",
        "4",
        "--uncertainty",
        str(tmp_path / "std.nrrd"),
        "--seed",
        "7",
        "--device",
        "cpu",
    ]


def test_inpaint_passes_the_mask() -> None:
    argv = build_restore_argv(
        RestoreParameters("in.nrrd", "out.nrrd", task="inpaint", mask_path="mask.nrrd", steps=3),
        executable=PY,
    )
    assert argv[len(PY) :] == [
        "restore",
        "in.nrrd",
        "out.nrrd",
        "--task",
        "inpaint",
        "--mask",
        "mask.nrrd",
        "--steps",
        "3",
    ]


def test_restore_degradations_are_canonical_and_deduplicated() -> None:
    params = RestoreParameters(
        "in.nrrd", "out.nrrd", task="restore", degradations=("slices", "BIAS", "slices"), overwrite=True
    )
    argv = build_restore_argv(params, executable=PY)
    assert argv[argv.index("--degradation") + 1] == "bias,slices"
    assert argv[-1] == "--overwrite"
    assert "--quiet" not in argv


def test_quiet_and_sigma_value() -> None:
    argv = build_restore_argv(RestoreParameters("a.nrrd", "b.nrrd", sigma=12.50, quiet=True))
    assert argv[argv.index("--sigma") + 1] == "12.5"
    assert argv[-1] == "--quiet"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("auto", "auto"),
        (" AUTO ", "auto"),
        ("12", "12"),
        (3.0, "3"),
        (0.125, "0.125"),
        ("5%", "5%"),
        ("100%", "100%"),
    ],
)
def test_parse_sigma_valid(value: str | float, expected: str) -> None:
    assert parse_sigma(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("abc", "Invalid sigma"),
        ("", "Invalid sigma"),
        ("5%%", "Invalid sigma"),
        ("-1", "positive"),
        (0, "positive"),
        ("nan", "positive"),
        ("inf", "positive"),
        ("0%", "positive"),
        ("150%", "at most 100%"),
        (True, "Invalid sigma"),
    ],
)
def test_parse_sigma_invalid(value: object, fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        parse_sigma(value)  # type: ignore[arg-type]


def test_parse_degradations() -> None:
    assert parse_degradations("blur, bias") == ("bias", "blur")
    assert parse_degradations(["slices"]) == ("slices",)
    assert parse_degradations("") == ()
    with pytest.raises(ParameterError, match="Unknown degradation kind noise"):
        parse_degradations("bias,noise")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (RestoreParameters("a.nrrd", "b.nrrd", task="deblur"), "Unknown task 'deblur'"),
        (RestoreParameters("a.nrrd", "b.nrrd", task="inpaint"), "The inpaint task needs a mask"),
        (RestoreParameters("a.nrrd", "b.nrrd", mask_path="m.nrrd"), "only used by the inpaint task"),
        (RestoreParameters("a.nrrd", "b.nrrd", task="restore"), "at least one degradation kind"),
        (RestoreParameters("a.nrrd", "b.nrrd", degradations=("bias",)), "only used by the restore task"),
        (
            RestoreParameters("a.nrrd", "b.nrrd", task="inpaint", mask_path="m.nrrd", sigma="auto"),
            "apply to the denoise task only",
        ),
        (
            RestoreParameters("a.nrrd", "b.nrrd", task="restore", degradations=("blur",), noise="rician"),
            "apply to the denoise task only",
        ),
        (RestoreParameters("a.nrrd", "b.nrrd", noise="poisson"), "Unknown noise model 'poisson'"),
        (RestoreParameters("a.nrrd", "b.nrrd", device="tpu"), "Unknown device 'tpu'"),
        (RestoreParameters("a.nrrd", "b.nrrd", steps=0), "Steps must be an integer of at least 1"),
        (RestoreParameters("a.nrrd", "b.nrrd", samples=0), "Samples must be an integer of at least 1"),
        (RestoreParameters("a.nrrd", "b.nrrd", seed=-3), "Seed must be an integer of at least 0"),
        (RestoreParameters("a.nrrd", "b.nrrd", steps=True), "Steps must be an integer"),  # type: ignore[arg-type]
        (
            RestoreParameters("a.nrrd", "b.nrrd", uncertainty_path="u.nrrd"),
            "set samples to 2 or more",
        ),
        (
            RestoreParameters("a.nrrd", "b.nrrd", samples=2, uncertainty_path="b.nrrd"),
            "uncertainty path must differ",
        ),
        (RestoreParameters("a.nrrd", "./a.nrrd"), "output path must differ"),
        (RestoreParameters("a.nrrd", "b.nrrd", model="  "), "model path is empty"),
    ],
)
def test_invalid_combinations_are_rejected_with_a_clear_message(
    params: RestoreParameters, fragment: str
) -> None:
    with pytest.raises(ParameterError, match=fragment) as info:
        build_restore_argv(params)
    # One line a Slicer dialog can show as is.
    assert "\n" not in info.value.message


def test_validate_accepts_every_task() -> None:
    validate(RestoreParameters("a.nrrd", "b.nrrd", task="denoise", noise="gaussian", sigma="auto"))
    validate(RestoreParameters("a.nrrd", "b.nrrd", task="inpaint", mask_path="m.nrrd"))
    validate(RestoreParameters("a.nrrd", "b.nrrd", task="restore", degradations=("bias", "blur", "slices")))


def test_default_samples_mirror_the_cli() -> None:
    """The module (which cannot import medidiff) knows the CLI's default chains per task, so that an
    uncertainty map is allowed exactly when the CLI will produce one."""
    from MediDiffLib.command import DEFAULT_SAMPLES

    from medidiff.inference.defaults import DEFAULTS

    assert {task: d.samples for task, d in DEFAULTS.items()} == DEFAULT_SAMPLES
