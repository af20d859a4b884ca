"""Which medidiff the module needs, whether the installed one is it, and how to install it: without Slicer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from MediDiffLib.dependencies import (
    DependencyStatus,
    Installed,
    Payload,
    Source,
    StepKind,
    detect,
    file_uri,
    find_source,
    find_source_checkout,
    installed_medidiff,
    is_declined,
    load_payload,
    medidiff_command,
    module_available,
    plan_installation,
    python_executable,
    python_gate,
    read_requirements,
    requirement_name,
    stale_reason,
    version_satisfies,
)

SHA = "ab" * 32


def make_payload(tmp_path: Path, version: str = "0.1.0", torch: str = ">=2.2") -> Payload:
    folder = tmp_path / "Resources" / "MediDiffPayload"
    folder.mkdir(parents=True)
    wheel = f"medidiff-{version}-py3-none-any.whl"
    (folder / wheel).write_bytes(b"wheel")
    manifest = {
        "version": version,
        "wheel": wheel,
        "sha256": SHA,
        "requires_python": ">=3.10",
        "torch_requirement": torch,
    }
    (folder / "medidiff-payload.json").write_text(json.dumps(manifest))
    payload = load_payload(tmp_path)
    assert payload is not None
    return payload


def status(**changes: object) -> DependencyStatus:
    fields: dict = {
        "medidiff": None,
        "stale": None,
        "torch": None,
        "torch_ok": False,
        "pytorch_utils": True,
        "missing_extras": ("psutil>=5.9",),
    }
    fields.update(changes)
    return DependencyStatus(**fields)


CURRENT = Installed("0.1.0", url="file:///x.whl", sha256=SHA)


# -- versions and the Python gate --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "specifier", "ok"),
    [
        ("2.13.0+cpu", ">=2.2", True),
        ("2.1.2", ">=2.2", False),
        ("3.12.1", ">=3.10", True),
        ("3.9.18", ">=3.10", False),
        ("3.10", ">=3.10,<4", True),
        ("2.2", "==2.2.0", True),
        ("2.2.5", "==2.2.*", True),
        ("2.3.0", "~=2.2", True),
        ("3.0.0", "~=2.2", False),
        ("1.0", "", True),
    ],
)
def test_version_satisfies(version: str, specifier: str, ok: bool) -> None:
    assert version_satisfies(version, specifier) is ok


def test_python_gate_names_the_slicer_version() -> None:
    assert python_gate((3, 12, 1)) is None
    assert python_gate((3, 10, 0)) is None
    text = python_gate((3, 9, 10))
    assert text is not None
    assert "3D Slicer 5.10 or newer" in text and "Python 3.9.10" in text and "3.10 or newer" in text
    assert "\n" not in text


# -- the payload and the checkout --------------------------------------------------------------------------


def test_payload_manifest_and_requirement(tmp_path: Path) -> None:
    payload = make_payload(tmp_path)
    assert payload.version == "0.1.0" and payload.torch_requirement == ">=2.2"
    requirement = payload.requirement()
    assert requirement.startswith("medidiff @ file:///") and requirement.endswith(f".whl#sha256={SHA}")
    assert find_source(tmp_path) == Source(payload=payload)  # the payload wins over any checkout


def test_broken_payload_is_reported(tmp_path: Path) -> None:
    payload = make_payload(tmp_path)
    payload.wheel_path.unlink()
    with pytest.raises(ValueError, match="missing"):
        load_payload(tmp_path)


def test_source_checkout_is_found(module_dir: Path, repo_root: Path, tmp_path: Path) -> None:
    assert find_source_checkout(module_dir) == repo_root
    source = find_source(module_dir)
    assert source is not None and source.checkout == repo_root and source.payload is None
    module = tmp_path / "slicer" / "MediDiff"
    module.mkdir(parents=True)
    assert find_source(module) is None  # a bare copy of the module: nothing to install from
    (tmp_path / "medidiff").mkdir()
    (tmp_path / "medidiff" / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n')
    assert find_source_checkout(module) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "medidiff"\nversion = "0.3.0"\n')
    assert find_source_checkout(module) == tmp_path.resolve()
    assert Source(checkout=tmp_path).version == "0.3.0"


# -- what is installed, and whether it is stale ------------------------------------------------------------


class FakeDistribution:
    def __init__(self, version: str, direct_url: dict | None) -> None:
        self.version = version
        self._direct = direct_url

    def read_text(self, name: str) -> str | None:
        if name == "INSTALLER":
            return "pip\n"
        assert name == "direct_url.json"
        return None if self._direct is None else json.dumps(self._direct)


def test_installed_medidiff_reads_pip_records() -> None:
    assert installed_medidiff(lambda name: []) is None
    wheel = {"url": "file:///p/medidiff.whl", "archive_info": {"hashes": {"sha256": SHA.upper()}}}
    assert installed_medidiff(lambda name: [FakeDistribution("0.1.0", wheel)]) == Installed(
        "0.1.0", "file:///p/medidiff.whl", SHA
    )
    old_pip = {"url": "file:///p/medidiff.whl", "archive_info": {"hash": f"sha256={SHA}"}}
    assert installed_medidiff(lambda name: [FakeDistribution("0.1.0", old_pip)]).sha256 == SHA
    editable = {"url": "file:///src/medidiff", "dir_info": {"editable": True}}
    assert installed_medidiff(lambda name: [FakeDistribution("0.1.0", editable)]).editable
    assert installed_medidiff(lambda name: [FakeDistribution("0.0.9", None)]) == Installed("0.0.9")

    class SourceTreeMetadata(FakeDistribution):  # medidiff.egg-info in a checkout on sys.path
        def read_text(self, name: str) -> str | None:
            return None

    pair = [SourceTreeMetadata("0.1.0", None), FakeDistribution("0.1.0", editable)]
    assert installed_medidiff(lambda name: pair).editable  # the installed one, not the build metadata


def test_stale_reasons(tmp_path: Path, repo_root: Path) -> None:
    payload = Source(payload=make_payload(tmp_path))
    assert stale_reason(CURRENT, payload) is None
    assert "instead of 0.1.0" in str(stale_reason(Installed("0.0.9", sha256=SHA), payload))
    assert stale_reason(Installed("0.1.0", sha256="cd" * 32), payload) == "another build of the same version"
    assert stale_reason(Installed("0.1.0"), payload) == "installed from elsewhere"  # e.g. from an index
    checkout = Source(checkout=repo_root)
    version = checkout.version
    editable = Installed(version, url=file_uri(repo_root), editable=True)
    assert stale_reason(editable, checkout) is None
    assert "not an editable install" in str(
        stale_reason(Installed(version, url=file_uri(repo_root)), checkout)
    )
    assert "instead of" in str(
        stale_reason(Installed("0.0.1", url=file_uri(repo_root), editable=True), checkout)
    )


def test_detect_in_this_environment(repo_root: Path) -> None:
    """The dev venv: medidiff installed editable from this checkout, torch present, no PyTorchUtils."""
    status_here = detect(Source(checkout=repo_root), ["psutil>=5.9"])
    assert status_here.medidiff is not None and status_here.torch is not None
    assert status_here.stale is None and status_here.torch_ok and status_here.ready
    assert status_here.missing_extras == ()
    assert "slicer" not in sys.modules or hasattr(sys.modules["slicer"], "vtkMRMLScene")


def test_detect_without_anything() -> None:
    from importlib.metadata import PackageNotFoundError

    def nothing(name: str) -> str:
        raise PackageNotFoundError(name)

    found = detect(
        None, ["psutil>=5.9"], find_spec=lambda name: None, distributions=lambda n: [], version=nothing
    )
    assert found.missing == ("medidiff", "torch") and not found.ready
    assert found.missing_extras == ("psutil>=5.9",)


def test_module_available_survives_broken_parents() -> None:
    def broken(name: str) -> object:
        raise ModuleNotFoundError(name)

    assert module_available("a.b", broken) is False
    assert module_available("json") is True


def test_python_executable_prefers_python_slicer() -> None:
    assert python_executable(lambda name: f"/slicer/bin/{name}", fallback="/usr/bin/python3") == (
        "/slicer/bin/PythonSlicer"
    )
    assert python_executable(lambda name: None, fallback="/usr/bin/python3") == "/usr/bin/python3"
    assert medidiff_command("/x/PythonSlicer") == ["/x/PythonSlicer", "-m", "medidiff"]


# -- plans -------------------------------------------------------------------------------------------------


def kinds(steps: list) -> list[StepKind]:
    return [step.kind for step in steps]


def test_nothing_to_install_when_ready(tmp_path: Path) -> None:
    ready = status(medidiff=CURRENT, torch="2.13.0", torch_ok=True, missing_extras=())
    assert plan_installation(ready, Source(payload=make_payload(tmp_path)), has_pip_ensure=True) == []


def test_fresh_install_with_pip_ensure_installs_the_wheel_never_a_name(tmp_path: Path) -> None:
    payload = make_payload(tmp_path)
    steps = plan_installation(status(), Source(payload=payload), has_pip_ensure=True)
    assert kinds(steps) == [StepKind.TORCH, StepKind.PIP_ENSURE]
    assert steps[0].ask and steps[0].requirement == ">=2.2"  # PyTorchUtils asks, with medidiff's requirement
    assert steps[1].arguments == (payload.requirement(), "psutil>=5.9")


def test_fresh_install_without_pip_ensure_asks_first(tmp_path: Path) -> None:
    payload = make_payload(tmp_path)
    steps = plan_installation(status(), Source(payload=payload), has_pip_ensure=False)
    assert kinds(steps) == [StepKind.CONFIRM, StepKind.TORCH, StepKind.PIP_INSTALL]
    assert (
        "PyTorch>=2.2" in steps[0].text
        and payload.wheel in steps[0].text
        and "Install them now?" in steps[0].text
    )
    assert steps[1].ask is False  # the CONFIRM step already asked
    assert steps[2].arguments == (payload.requirement(), "psutil>=5.9")


def test_without_the_pytorch_extension_pip_brings_torch(tmp_path: Path) -> None:
    steps = plan_installation(status(pytorch_utils=False), Source(payload=make_payload(tmp_path)), False)
    assert kinds(steps) == [StepKind.CONFIRM, StepKind.PIP_INSTALL]


def test_stale_wheel_is_offered_an_update(tmp_path: Path) -> None:
    payload = make_payload(tmp_path)
    stale = status(
        medidiff=Installed("0.1.0", sha256="cd" * 32),
        stale="another build of the same version",
        torch="2.13.0",
        torch_ok=True,
        missing_extras=(),
    )
    steps = plan_installation(stale, Source(payload=payload), has_pip_ensure=True)
    assert kinds(steps) == [StepKind.CONFIRM, StepKind.PIP_INSTALL, StepKind.PIP_INSTALL]
    assert "another build of the same version" in steps[0].text and "Update it now?" in steps[0].text
    assert steps[1].arguments == ("--force-reinstall", "--no-deps", payload.requirement())
    assert steps[2].arguments == (payload.requirement(),)  # adds any new dependency


def test_checkout_is_installed_editable(repo_root: Path) -> None:
    checkout = Source(checkout=repo_root)
    steps = plan_installation(status(), checkout, has_pip_ensure=True)
    # pip_ensure takes requirements, not `-e PATH`: the checkout goes through pip_install after a question.
    assert kinds(steps) == [StepKind.CONFIRM, StepKind.TORCH, StepKind.PIP_INSTALL]
    assert steps[-1].arguments[:2] == ("-e", str(repo_root.resolve()))
    stale = status(medidiff=Installed("0.1.0"), stale="not an editable install", torch="2.13", torch_ok=True)
    assert kinds(plan_installation(stale, checkout, True)) == [StepKind.CONFIRM, StepKind.PIP_INSTALL]


def test_only_torch_too_old(tmp_path: Path) -> None:
    old_torch = status(medidiff=CURRENT, torch="2.0.1", torch_ok=False, missing_extras=())
    steps = plan_installation(old_torch, Source(payload=make_payload(tmp_path)), has_pip_ensure=True)
    assert kinds(steps) == [StepKind.TORCH] and steps[0].ask and steps[0].requirement == ">=2.2"
    steps = plan_installation(
        status(medidiff=CURRENT, torch="2.0.1", pytorch_utils=False, missing_extras=()),
        Source(payload=make_payload(tmp_path / "b")),
        has_pip_ensure=False,
    )
    assert kinds(steps) == [StepKind.CONFIRM, StepKind.PIP_INSTALL]
    assert steps[1].arguments == ("torch>=2.2",)


def test_every_interactive_plan_asks_before_installing(tmp_path: Path, repo_root: Path) -> None:
    sources = [Source(payload=make_payload(tmp_path)), Source(checkout=repo_root)]
    situations = [
        status(),
        status(pytorch_utils=False),
        status(medidiff=CURRENT, stale="old", torch="2.13", torch_ok=True),
        status(medidiff=CURRENT, torch="2.0", torch_ok=False),
    ]
    for source in sources:
        for situation in situations:
            for has_pip_ensure in (True, False):
                first = plan_installation(situation, source, has_pip_ensure)[0]
                asks = first.kind in (StepKind.CONFIRM, StepKind.PIP_ENSURE) or (
                    first.kind is StepKind.TORCH and first.ask
                )
                assert asks, (source, situation, first)


def test_non_interactive_plan_never_prompts(tmp_path: Path) -> None:
    steps = plan_installation(status(), Source(payload=make_payload(tmp_path)), True, interactive=False)
    assert kinds(steps) == [StepKind.TORCH, StepKind.PIP_INSTALL]
    assert steps[0].ask is False


def test_declining_is_not_a_failure() -> None:
    assert is_declined(RuntimeError("User declined package installation"))
    installation_aborted = type("InstallationAbortedError", (Exception,), {})
    assert is_declined(installation_aborted(["x"], "MediDiff"))
    assert not is_declined(RuntimeError("pip failed"))
    assert not is_declined(OSError("declined"))


def test_requirements_file_of_the_module(module_dir: Path, tmp_path: Path) -> None:
    requirements = read_requirements(module_dir / "Resources" / "requirements.txt")
    assert [requirement_name(r) for r in requirements] == ["psutil"]  # medidiff is never named
    sample = tmp_path / "requirements.txt"
    sample.write_text("# comment\n\nmedidiff>=0.1  # the CLI\n--extra-index-url https://x\npsutil\n")
    assert read_requirements(sample) == ["medidiff>=0.1", "psutil"]
    assert requirement_name("MediDiff[extra]>=0.1") == "medidiff"
    with pytest.raises(ValueError):
        requirement_name(">=1")
