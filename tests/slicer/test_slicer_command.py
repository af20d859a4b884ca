"""The `medidiff restore` command line the Slicer module builds from its parameters."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from MediDiffLib.catalog import Catalog
from MediDiffLib.command import (
    RestoreParameters,
    build_restore_argv,
    parse_degradations,
    parse_sigma,
    validate,
)
from MediDiffLib.errors import ParameterError

PY = ("/opt/slicer/bin/PythonSlicer", "-m", "medidiff")


def test_minimal_denoise_uses_cli_defaults(catalog: Catalog) -> None:
    argv = build_restore_argv(RestoreParameters("in.nrrd", "out.nrrd"), catalog, executable=PY)
    assert argv == [*PY, "restore", "in.nrrd", "out.nrrd", "--task", "denoise"]


def test_full_denoise_with_samples_and_uncertainty(tmp_path: Path, catalog: Catalog) -> None:
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
    argv = build_restore_argv(params, catalog)
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


def test_inpaint_passes_the_mask(catalog: Catalog) -> None:
    argv = build_restore_argv(
        RestoreParameters("in.nrrd", "out.nrrd", task="inpaint", mask_path="mask.nrrd", steps=3),
        catalog,
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


def test_restore_degradations_are_canonical_and_deduplicated(catalog: Catalog) -> None:
    params = RestoreParameters(
        "in.nrrd", "out.nrrd", task="restore", degradations=("slices", "BIAS", "thick-slices"), overwrite=True
    )
    argv = build_restore_argv(params, catalog, executable=PY)
    # The old spelling "slices" is the registry's alias of "thick-slices".
    assert argv[argv.index("--degradation") + 1] == "bias,thick-slices"
    assert argv[-1] == "--overwrite"
    assert "--quiet" not in argv


def test_restore_target_spacing_and_deblur_fwhm(catalog: Catalog) -> None:
    params = RestoreParameters(
        "in.nrrd", "out.nrrd", task="restore", degradations=("thick-slices",), target_spacing=1.0
    )
    argv = build_restore_argv(params, catalog, executable=PY)
    assert argv[argv.index("--target-spacing") + 1] == "1"
    if "deblur" in catalog.names:
        argv = build_restore_argv(RestoreParameters("a.nrrd", "b.nrrd", task="deblur", fwhm=2.5), catalog, PY)
        assert argv[argv.index("--fwhm") + 1] == "2.5"
        with pytest.raises(ParameterError, match="needs the blur's width"):
            build_restore_argv(RestoreParameters("a.nrrd", "b.nrrd", task="deblur"), catalog, PY)


def test_quiet_and_sigma_value(catalog: Catalog) -> None:
    argv = build_restore_argv(RestoreParameters("a.nrrd", "b.nrrd", sigma=12.50, quiet=True), catalog)
    assert argv[argv.index("--sigma") + 1] == "12.5"
    assert argv[-1] == "--quiet"


def test_backend_is_reserved_and_omitted_by_default(catalog: Catalog) -> None:
    assert "--backend" not in build_restore_argv(RestoreParameters("a.nrrd", "b.nrrd"), catalog)
    argv = build_restore_argv(RestoreParameters("a.nrrd", "b.nrrd", backend="torch"), catalog)
    assert argv[argv.index("--backend") + 1] == "torch"


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


def test_parse_degradations(catalog: Catalog) -> None:
    assert parse_degradations("blur, bias", catalog) == ("bias", "blur")
    assert parse_degradations(["slices"], catalog) == ("thick-slices",)
    assert parse_degradations("", catalog) == ()
    with pytest.raises(ParameterError, match="Unknown degradation kind 'noise'"):
        parse_degradations("bias,noise", catalog)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (RestoreParameters("a.nrrd", "b.nrrd", task="sharpen"), "Unknown task 'sharpen'"),
        (RestoreParameters("a.nrrd", "b.nrrd", task="inpaint"), "The inpaint task needs a mask"),
        (
            RestoreParameters("a.nrrd", "b.nrrd", mask_path="m.nrrd"),
            "A mask is only used by the inpaint task",
        ),
        (RestoreParameters("a.nrrd", "b.nrrd", task="restore"), "needs at least one degradation kind"),
        (RestoreParameters("a.nrrd", "b.nrrd", degradations=("bias",)), "only used by the restore task"),
        (
            RestoreParameters("a.nrrd", "b.nrrd", task="inpaint", mask_path="m.nrrd", sigma="auto"),
            "The noise level (sigma) is only used by",
        ),
        (
            RestoreParameters("a.nrrd", "b.nrrd", task="restore", degradations=("blur",), noise="rician"),
            "The noise model is only used by the denoise task",
        ),
        (RestoreParameters("a.nrrd", "b.nrrd", target_spacing=1.0), "target spacing is only used by"),
        (RestoreParameters("a.nrrd", "b.nrrd", noise="poisson"), "Unknown noise model 'poisson'"),
        (RestoreParameters("a.nrrd", "b.nrrd", device="tpu"), "Unknown device 'tpu'"),
        (RestoreParameters("a.nrrd", "b.nrrd", steps=0), "Steps must be an integer of at least 1"),
        (RestoreParameters("a.nrrd", "b.nrrd", samples=0), "Samples must be an integer of at least 1"),
        (RestoreParameters("a.nrrd", "b.nrrd", seed=-3), "Seed must be an integer of at least 0"),
        (RestoreParameters("a.nrrd", "b.nrrd", steps=True), "Steps must be an integer"),  # type: ignore[arg-type]
        (
            RestoreParameters(
                "a.nrrd", "b.nrrd", task="restore", degradations=("bias",), target_spacing=-1.0
            ),
            "must be a positive number of millimetres",
        ),
        (RestoreParameters("a.nrrd", "b.nrrd", uncertainty_path="u.nrrd"), "set samples to 2 or more"),
        (
            RestoreParameters("a.nrrd", "b.nrrd", samples=2, uncertainty_path="b.nrrd"),
            "uncertainty path must differ",
        ),
        (RestoreParameters("a.nrrd", "./a.nrrd"), "output path must differ"),
        (RestoreParameters("a.nrrd", "b.nrrd", model="  "), "model path is empty"),
    ],
)
def test_invalid_combinations_are_rejected_with_a_clear_message(
    params: RestoreParameters, fragment: str, catalog: Catalog
) -> None:
    with pytest.raises(ParameterError, match=re.escape(fragment)) as info:
        build_restore_argv(params, catalog)
    # One line a Slicer dialog can show as is.
    assert "\n" not in info.value.message


def test_validate_accepts_every_task(catalog: Catalog) -> None:
    validate(RestoreParameters("a.nrrd", "b.nrrd", task="denoise", noise="gaussian", sigma="auto"), catalog)
    validate(RestoreParameters("a.nrrd", "b.nrrd", task="inpaint", mask_path="m.nrrd"), catalog)
    validate(
        RestoreParameters("a.nrrd", "b.nrrd", task="restore", degradations=catalog.degradations), catalog
    )


def test_uncertainty_follows_the_registry_default_samples(catalog: Catalog) -> None:
    """An uncertainty map without --samples is allowed exactly when the task's default has 2+ chains."""
    for task in catalog.tasks:
        extra = {
            "mask": {"mask_path": "m.nrrd"},
            "degradation": {"degradations": catalog.degradations[:1]},
            "fwhm": {"fwhm": 2.0},
        }
        kwargs: dict = {}
        for option in task.requires:
            kwargs.update(extra[option])
        params = RestoreParameters("a.nrrd", "b.nrrd", task=task.name, uncertainty_path="u.nrrd", **kwargs)
        if task.samples >= 2:
            validate(params, catalog)
        else:
            with pytest.raises(ParameterError, match="set samples to 2 or more"):
                validate(params, catalog)
