"""Generate docs/api.md, the Python API reference, from the docstrings and signatures of the public objects.

``python -m docs.gen_api`` rewrites the page (``--check`` only compares); a test fails while it is stale.
Google-style sections (Args, Returns, Raises, Attributes) become bullet lists; ``Example::`` blocks become
code blocks. An object that does not exist (yet) is skipped, so the page covers what the package offers at
generation time.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from docs._generated import DOCS, main

TARGET = DOCS / "api.md"

# (section title, intro, [(module, name), ...])
SECTIONS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Reading, restoring, writing",
        "The top-level API: `import medidiff` is light; each name imports its module on first use. On a CPU "
        "that other jobs share, start Python with `OMP_WAIT_POLICY=PASSIVE` (the CLI sets it for itself): "
        "it must be set before torch is imported. With another busy process on a 2-core CPU, denoising the "
        "2 mm MNI head took 79 s with OpenMP's default spin-waiting and 39 s with passive waiting (24.5 s "
        "either way when alone).",
        [
            ("medidiff", "read_volume"),
            ("medidiff", "write_volume"),
            ("medidiff", "restore"),
            ("medidiff", "load_model"),
            ("medidiff.io.volume", "Volume"),
            ("medidiff.inference.pipeline", "RestoreResult"),
            ("medidiff", "retain_freed_memory"),
        ],
    ),
    (
        "MONAI transforms",
        "Restoration inside a MONAI `Compose` pipeline, and the intensity normalisation the model uses.",
        [("medidiff.transforms", "Restored"), ("medidiff.transforms", "Normalizer")],
    ),
    (
        "Metrics",
        "`medidiff.metrics`: PSNR, 3D SSIM and NRMSE with explicit `data_range` and optional masks.",
        [
            ("medidiff.metrics", "psnr"),
            ("medidiff.metrics", "ssim"),
            ("medidiff.metrics", "nrmse"),
            ("medidiff.metrics", "compute_metrics"),
            ("medidiff.metrics", "foreground_mask"),
        ],
    ),
    (
        "Degradation simulator",
        "`medidiff.degrade`: seeded degradations whose JSON records reproduce the output exactly.",
        [
            ("medidiff.degrade", "degrade"),
            ("medidiff.degrade", "draw_parameters"),
            ("medidiff.degrade", "apply_degradation"),
            ("medidiff.degrade", "Degraded"),
        ],
    ),
    (
        "Benchmarks",
        "`medidiff.benchmark`: the harness behind `medidiff benchmark`, and the classical baselines.",
        [
            ("medidiff.benchmark.config", "load_config"),
            ("medidiff.benchmark.runner", "run_benchmark"),
            ("medidiff.benchmark.scoring", "psnr_scale_fit"),
            ("medidiff.benchmark.baselines", "bm4d_denoise"),
            ("medidiff.benchmark.baselines", "nlm"),
            ("medidiff.benchmark.baselines", "tv"),
            ("medidiff.benchmark.baselines", "biharmonic"),
            ("medidiff.benchmark.baselines", "n4"),
            ("medidiff.benchmark.baselines", "cubic_slices"),
        ],
    ),
    (
        "Errors",
        "Every failure a user can cause raises one of these; the CLI prints it as one line and exits with 2.",
        [
            ("medidiff.errors", "MedidiffError"),
            ("medidiff.errors", "InputError"),
            ("medidiff.errors", "OutputError"),
            ("medidiff.errors", "ModelError"),
            ("medidiff.errors", "ConfigError"),
        ],
    ),
]

_SECTION = re.compile(r"^(Args|Arguments|Returns|Raises|Attributes|Yields):\s*$")
_ROLE = re.compile(r":(?:class|func|mod|data|meth|attr|obj):`(~?)([^`]+)`")
_ITEM = re.compile(r"^(\*{0,2}[\w.]+(?:, *\*{0,2}[\w.]+)*)(?: \(([^)]*)\))?:\s*(.*)$")


def _escape(text: str) -> str:
    """Prose for Markdown: Sphinx roles become code spans; ``*`` and ``__`` outside code are escaped."""
    text = _ROLE.sub(lambda m: "`" + (m.group(2).split(".")[-1] if m.group(1) else m.group(2)) + "`", text)
    text = text.replace("``", "`")
    parts = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else p.replace("*", "\\*").replace("__", "\\_\\_") for p in parts)


def docstring_markdown(doc: str | None) -> str:
    """A Google-style docstring as Markdown (see the module docstring)."""
    if not doc:
        return "*(no docstring)*\n"
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    section: str | None = None
    in_code = False
    for line in lines:
        if in_code:
            if line.strip() and not line.startswith("    "):
                out.append("```")
                in_code = False
            elif line.strip() or out[-1] != "```python":
                out.append(line[4:])
                continue
            else:
                continue
        match = _SECTION.match(line)
        if match:
            section = match.group(1)
            out += ["", f"**{section}**", ""]
            continue
        if line.rstrip().endswith("::"):
            out += [_escape(line.rstrip()[:-1]), "", "```python"]
            in_code = True
            continue
        if section and line.startswith("    "):
            body = line[4:]
            item = _ITEM.match(body) if section in ("Args", "Arguments", "Attributes", "Raises") else None
            if item and not body.startswith(" "):
                kind = f" ({item.group(2)})" if item.group(2) else ""
                out.append(f"- `{item.group(1)}`{kind}: {_escape(item.group(3))}")
            elif out and out[-1].startswith("- "):
                out[-1] += " " + _escape(body.strip())
            else:
                out.append(_escape(body.strip()))
            continue
        if not line.strip() and out[-1:] != [""]:
            section = None
        out.append(_escape(line))
    if in_code:
        out.append("```")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def _signature(obj: Any, name: str) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    return f"```python\n{name}{_unquote(sig)}\n```\n"


def _unquote(signature: str) -> str:
    """Postponed annotations print as strings ('int | None'); show them as written in the source."""
    signature = re.sub(r": '([^']*)'", r": \1", signature)
    return re.sub(r"-> '([^']*)'$", r"-> \1", signature)


def _members(cls: type) -> list[str]:
    """Public methods and properties defined on the class itself, documented briefly."""
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            doc = inspect.getdoc(member) or ""
            out.append(f"- `{name}` (property): {_escape(doc.splitlines()[0]) if doc else ''}")
        elif inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod)):
            function = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            doc = inspect.getdoc(function) or ""
            sig = _unquote(str(inspect.signature(function))).replace("(self, ", "(").replace("(self)", "()")
            out.append(f"- `{name}{sig}`: {_escape(doc.splitlines()[0]) if doc else ''}")
    return out


def document(module: str, name: str) -> str | None:
    """Markdown for one object, or None if it does not exist."""
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    qualified = f"{module}.{name}" if module != "medidiff" else f"medidiff.{name}"
    parts = [f"### `{qualified}`\n", _signature(obj, name), docstring_markdown(inspect.getdoc(obj))]
    if inspect.isclass(obj):
        members = _members(obj)
        if members:
            parts += ["\n**Members**\n", "\n".join(members) + "\n"]
    return "\n".join(p for p in parts if p)


def render() -> str:
    """The whole page as Markdown."""
    lines = [
        "# Python API",
        "",
        "<!-- Generated by docs/gen_api.py from the docstrings; do not edit by hand.",
        "     Regenerate with: python -m docs.gen_api -->",
        "",
        "```python",
        "import medidiff",
        'vol = medidiff.read_volume("scan.nii.gz")                 # or a DICOM directory, .nrrd, .mha',
        'out = medidiff.restore(vol, task="denoise", sigma="auto")  # a Volume (a MetaTensor if given one)',
        'medidiff.write_volume(out, "restored.nii.gz")',
        "```",
        "",
    ]
    for title, intro, objects in SECTIONS:
        docs = [d for d in (document(m, n) for m, n in objects) if d]
        if docs:
            lines += [f"## {title}", "", intro, "", *docs]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    raise SystemExit(main(render, TARGET))
