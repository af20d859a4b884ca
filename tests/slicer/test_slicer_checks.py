"""Input-volume and mask checks, and the messages of failed processes."""

from __future__ import annotations

import pytest
from MediDiffLib.checks import (
    VolumeGeometry,
    check_input_volume,
    check_mask_geometry,
    check_mask_not_empty,
    geometry_difference,
)
from MediDiffLib.errors import (
    MESSAGES,
    STATUS,
    InputVolumeError,
    MaskError,
    message,
    process_failure,
    status,
    stderr_tail,
)

# A realistic LPS-stored scan seen in RAS: flipped first two axes, anisotropic spacing, off-centre origin.
SCAN = VolumeGeometry.from_values(
    (16, 12, 8),
    [[-0.9, 0.0, 0.0, 10.0], [0.0, -1.1, 0.0, -20.0], [0.0, 0.0, 2.5, 5.0], [0.0, 0.0, 0.0, 1.0]],
)


def shifted(geometry: VolumeGeometry, dx: float) -> VolumeGeometry:
    rows = [list(row) for row in geometry.ijk_to_ras]
    rows[0][3] += dx
    return VolumeGeometry.from_values(geometry.dimensions, rows)


def test_a_scalar_3d_volume_passes() -> None:
    check_input_volume("T1", "vtkMRMLScalarVolumeNode", 1, (16, 16, 16))


@pytest.mark.parametrize(
    ("class_name", "components", "dimensions", "fragment"),
    [
        ("vtkMRMLLabelMapVolumeNode", 1, (16, 16, 16), "is a label map"),
        ("vtkMRMLVectorVolumeNode", 3, (16, 16, 16), "a vector or colour volume"),
        ("vtkMRMLDiffusionWeightedVolumeNode", 1, (16, 16, 16), "a diffusion-weighted volume"),
        ("vtkMRMLScalarVolumeNode", 3, (16, 16, 16), "3 components per voxel"),
        ("vtkMRMLScalarVolumeNode", None, None, "has no image data"),
        ("vtkMRMLScalarVolumeNode", 1, (256, 256, 1), "256×256×1"),
        ("vtkMRMLScalarVolumeNode", 1, (0, 0, 0), "has no image data"),
    ],
)
def test_volumes_that_cannot_be_restored(
    class_name: str, components: int | None, dimensions: tuple[int, int, int] | None, fragment: str
) -> None:
    with pytest.raises(InputVolumeError, match=fragment) as info:
        check_input_volume("scan", class_name, components, dimensions)
    assert "'scan'" in info.value.message


def test_geometry_matches_itself_and_tolerates_text_rounding() -> None:
    assert geometry_difference(SCAN, SCAN) is None
    assert geometry_difference(SCAN, shifted(SCAN, 1e-5)) is None


def test_geometry_differences_are_described() -> None:
    other_size = VolumeGeometry.from_values((16, 12, 9), SCAN.ijk_to_ras)
    assert geometry_difference(SCAN, other_size) == "size 16×12×9 instead of 16×12×8"
    difference = geometry_difference(SCAN, shifted(SCAN, 0.5))
    assert difference is not None and "0.5 mm" in difference
    # Same origin and spacing, mirrored K axis: the far corner moves by 2 × 7 × 2.5 mm.
    rows = [list(row) for row in SCAN.ijk_to_ras]
    rows[2][2] = -2.5
    difference = geometry_difference(SCAN, VolumeGeometry.from_values(SCAN.dimensions, rows))
    assert difference is not None and "35 mm" in difference


def test_ras_of_voxel() -> None:
    assert SCAN.ras_of((0, 0, 0)) == (10.0, -20.0, 5.0)
    assert SCAN.ras_of((1, 2, 2)) == pytest.approx((9.1, -22.2, 10.0))
    with pytest.raises(ValueError):
        VolumeGeometry.from_values((1, 2), SCAN.ijk_to_ras)


def test_mask_checks() -> None:
    check_mask_geometry("holes", "T1", SCAN, SCAN)
    with pytest.raises(MaskError, match="does not have the geometry of the input volume 'T1'"):
        check_mask_geometry("holes", "T1", SCAN, shifted(SCAN, 3.0))
    with pytest.raises(MaskError, match="different transform"):
        check_mask_geometry("holes", "T1", SCAN, SCAN, same_transform=False)
    check_mask_not_empty("holes", 12)
    with pytest.raises(MaskError, match="'holes' is empty"):
        check_mask_not_empty("holes", 0)


def test_process_failure_messages() -> None:
    argparse_old = [
        "usage: medidiff [-h] [--version] COMMAND ...",
        "medidiff: error: argument COMMAND: invalid choice: 'restore' (choose from info)",
    ]
    assert process_failure(2, argparse_old).message == MESSAGES["process_too_old"]
    missing = ["/usr/bin/PythonSlicer: No module named medidiff"]
    assert process_failure(1, missing).message == MESSAGES["medidiff_missing_install"]
    assert "killed by signal SIGKILL" in process_failure(-9, []).message
    assert process_failure(-15, [], cancelled=True).message == message("process_failed", code=-15)
    last_wins = ["medidiff: error: first", "medidiff: error: second"]
    assert process_failure(2, last_wins).message.endswith(": second")


def test_stderr_tail_keeps_the_end() -> None:
    lines = [f"line {i}" for i in range(100)] + ["", "   "]
    tail = stderr_tail(lines, limit=3)
    assert tail == "line 97\nline 98\nline 99"


def test_every_message_formats_to_one_line() -> None:
    fields = {
        "reason": "r",
        "name": "n",
        "kind": "k",
        "size": "1×2×3",
        "mask": "m",
        "volume": "v",
        "difference": "d",
        "signal": "SIGKILL",
        "code": 1,
        "command": "c",
        "path": "p",
        "slicer": "5.10",
        "python_needed": "3.10 or newer",
        "python": "3.9.10",
        "installed": "0.1.0",
        "expected": "medidiff 0.2.0",
        "requirement": ">=2.2",
        "task": "t",
        "kinds": "a, b",
        "what": "task",
        "value": "x",
        "choices": "a or b",
        "option": "o",
        "tasks": "t task",
        "minimum": 1,
        "error": "e",
        "missing": "medidiff",
        "elapsed": "0:01",
        "progress": "denoise 1/2",
        "added": "'x'",
        "warning": "w",
    }
    for key in MESSAGES:
        text = message(key, **fields)
        assert text and "\n" not in text and "{" not in text, key
    for key in STATUS:
        text = status(key, **fields)
        assert text and "\n" not in text and "{" not in text, key
