"""The extension's files, checked without Slicer: module compiles, .ui matches the code, CMake is complete."""

from __future__ import annotations

import ast
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from MediDiffLib.errors import MESSAGES, STATUS
from PIL import Image


@pytest.fixture
def module_source(module_dir: Path) -> str:
    return (module_dir / "MediDiff.py").read_text(encoding="utf-8")


@pytest.fixture
def ui_tree(module_dir: Path) -> ET.Element:
    return ET.parse(module_dir / "Resources" / "UI" / "MediDiff.ui").getroot()


def ui_widgets(root: ET.Element) -> dict[str, ET.Element]:
    return {w.attrib["name"]: w for w in root.iter("widget")}


def parameter_names(widget: ET.Element) -> list[str]:
    return [
        p.findtext("string", default="")
        for p in widget.findall("property")
        if p.attrib.get("name") == "SlicerParameterName"
    ]


def test_module_compiles(module_dir: Path, tmp_path: Path) -> None:
    py_compile.compile(str(module_dir / "MediDiff.py"), cfile=str(tmp_path / "MediDiff.pyc"), doraise=True)


def test_module_has_the_five_slicer_classes(module_source: str) -> None:
    classes = {
        node.name: node for node in ast.walk(ast.parse(module_source)) if isinstance(node, ast.ClassDef)
    }
    bases = {name: [ast.unparse(base) for base in node.bases] for name, node in classes.items()}
    assert bases["MediDiff"] == ["ScriptedLoadableModule"]
    assert bases["MediDiffWidget"][0] == "ScriptedLoadableModuleWidget"
    assert bases["MediDiffLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["MediDiffTest"] == ["ScriptedLoadableModuleTest"]
    decorators = [ast.unparse(d) for d in classes["MediDiffParameterNode"].decorator_list]
    assert decorators == ["parameterNodeWrapper"]


def test_module_never_uses_postponed_annotations(module_source: str) -> None:
    """parameterNodeWrapper evaluates annotations at runtime; postponed (string) annotations break it."""
    tree = ast.parse(module_source)
    futures = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    assert futures == []


def test_every_ui_widget_the_code_uses_exists(module_source: str, ui_tree: ET.Element) -> None:
    used = set(re.findall(r"self\.ui\.(\w+)", module_source))
    assert {"applyButton", "cancelButton", "progressBar", "statusLabel", "maskSelector"} <= used
    missing = sorted(used - set(ui_widgets(ui_tree)))
    assert missing == []


def test_ui_parameters_are_fields_of_the_parameter_node(module_source: str, ui_tree: ET.Element) -> None:
    node_class = next(
        n
        for n in ast.walk(ast.parse(module_source))
        if isinstance(n, ast.ClassDef) and n.name == "MediDiffParameterNode"
    )
    fields = {stmt.target.id for stmt in node_class.body if isinstance(stmt, ast.AnnAssign)}  # type: ignore[union-attr]
    bound = {name for widget in ui_widgets(ui_tree).values() for name in parameter_names(widget)}
    assert bound - fields == set()
    # Every option of the panel is bound to a widget, except the lists that come from medidiff's registry
    # (task, noise model: filled and synced by the module) and the model path (synced by hand).
    expected = {
        "inputVolume",
        "maskNode",
        "degradeBias",
        "degradeBlur",
        "degradeSlices",
        "targetSpacing",
        "fwhm",
        "sigmaMode",
        "sigmaValue",
        "steps",
        "samples",
        "computeUncertainty",
        "seed",
        "device",
        "backend",
    }
    assert expected <= bound
    assert {"task", "noiseModel", "modelPath"} <= fields - bound


def test_ui_widget_classes_suit_their_connectors(ui_tree: ET.Element) -> None:
    """parameterNodeWrapper matches widget classes exactly (QSpinBox, not ctkSpinBox)."""
    widgets = ui_widgets(ui_tree)
    expected = {
        "inputSelector": "qMRMLNodeComboBox",
        "maskSelector": "qMRMLNodeComboBox",
        "taskComboBox": "QComboBox",
        "noiseModelComboBox": "QComboBox",
        "sigmaModeComboBox": "QComboBox",
        "deviceComboBox": "QComboBox",
        "sigmaValueSpinBox": "QDoubleSpinBox",
        "fwhmSpinBox": "QDoubleSpinBox",
        "targetSpacingSpinBox": "QDoubleSpinBox",
        "stepsSpinBox": "QSpinBox",
        "samplesSpinBox": "QSpinBox",
        "seedSpinBox": "QSpinBox",
        "uncertaintyCheckBox": "QCheckBox",
        "modelPathLineEdit": "ctkPathLineEdit",
        "progressBar": "QProgressBar",
    }
    assert {name: widgets[name].attrib["class"] for name in expected} == expected


def test_node_selectors_receive_the_scene(ui_tree: ET.Element) -> None:
    selectors = {name for name, w in ui_widgets(ui_tree).items() if w.attrib["class"] == "qMRMLNodeComboBox"}
    receivers = {
        c.findtext("receiver")
        for c in ui_tree.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert selectors and selectors <= receivers


def test_mask_selector_offers_segmentations_and_label_maps(ui_tree: ET.Element) -> None:
    mask = ui_widgets(ui_tree)["maskSelector"]
    node_types = [
        s.text for p in mask.findall("property") if p.attrib["name"] == "nodeTypes" for s in p.iter("string")
    ]
    assert node_types == ["vtkMRMLSegmentationNode", "vtkMRMLLabelMapVolumeNode"]


def test_cmake_lists_every_script_and_resource(module_dir: Path) -> None:
    cmake = (module_dir / "CMakeLists.txt").read_text(encoding="utf-8").replace("${MODULE_NAME}", "MediDiff")
    listed = set(re.findall(r"^\s+(\S+\.(?:py|png|ui|txt))\s*$", cmake, flags=re.MULTILINE))
    scripts = {str(p.relative_to(module_dir)) for p in (module_dir / "MediDiffLib").glob("*.py")} | {
        "MediDiff.py"
    }
    resources = {str(p.relative_to(module_dir)) for p in (module_dir / "Resources").rglob("*") if p.is_file()}
    assert listed == scripts | resources
    assert "slicerMacroBuildScriptedModule" in cmake
    assert "slicer_add_python_unittest(SCRIPT MediDiff.py)" in cmake


def test_extension_cmake(repo_root: Path) -> None:
    """The extension's top level is the repository root (the Extensions Index builds from there)."""
    cmake = (repo_root / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r'set\(EXTENSION_DEPENDS\s+"PyTorch"\)', cmake)
    assert "add_subdirectory(slicer/MediDiff)" in cmake
    assert "find_package(Slicer REQUIRED)" in cmake
    assert not (repo_root / "slicer" / "CMakeLists.txt").exists()  # one extension definition only
    module = (repo_root / "slicer" / "MediDiff" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "tools/build_slicer_payload.py" in module and "MediDiffPayload" in module


def test_icon_is_a_valid_png(module_dir: Path) -> None:
    with Image.open(module_dir / "Resources" / "Icons" / "MediDiff.png") as icon:
        assert icon.format == "PNG"
        assert icon.size == (128, 128)


def _static_fragments(node: ast.AST) -> list[str]:
    """The literal parts of a message argument: a string, or the constant pieces of an f-string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
    return []


def _raised_fragments(path: Path, callees: set[str]) -> dict[str, list[str]]:
    """Literal fragments of the first argument of every call to one of ``callees`` in a source file."""
    found: dict[str, list[str]] = {}
    for call in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(call, ast.Call) and call.args):
            continue
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        if name in callees and _static_fragments(call.args[0]):
            found[f"{path.name}:{call.lineno}"] = _static_fragments(call.args[0])
    return found


def test_docs_explain_every_message(repo_root: Path, module_dir: Path) -> None:
    """docs/slicer.md's troubleshooting quotes every message the module can show (placeholders aside)."""
    docs = " ".join((repo_root / "docs" / "slicer.md").read_text(encoding="utf-8").split())
    messages = {key: re.split(r"\{[^}]*\}", template) for key, template in MESSAGES.items()}
    messages |= {f"status:{key}": re.split(r"\{[^}]*\}", template) for key, template in STATUS.items()}
    undocumented = {
        key: fragment
        for key, fragments in messages.items()
        for fragment in (" ".join(f.split()) for f in fragments)
        if len(fragment) >= 6 and fragment not in docs
    }
    assert undocumented == {}


def test_every_message_comes_from_the_central_table(module_dir: Path) -> None:
    """No error or status text is written at a raise or display site: all are in MediDiffLib.errors."""
    callees = {
        "ParameterError",
        "ProcessError",
        "InputVolumeError",
        "MaskError",
        "DependencyError",
        "_showError",
    }
    sources = [module_dir / "MediDiff.py", *sorted((module_dir / "MediDiffLib").glob("*.py"))]
    literal = {}
    for source in sources:
        literal |= _raised_fragments(source, callees)
    assert literal == {}
    module = (module_dir / "MediDiff.py").read_text(encoding="utf-8")
    assert re.findall(r"statusLabel\.text = [\"f]", module) == []


def test_sources_parse_as_python_3_9(module_dir: Path) -> None:
    """Slicer 5.4 to 5.8 embed Python 3.9: the module must load there to say which Slicer it needs."""
    sources = [module_dir / "MediDiff.py", *sorted((module_dir / "MediDiffLib").glob("*.py"))]
    for source in sources:
        ast.parse(source.read_text(encoding="utf-8"), filename=str(source), feature_version=(3, 9))
