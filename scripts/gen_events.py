"""Generate ``mpsflow/events/_generated.py`` from the official tencentcloud MPS SDK.

The SDK's ``models.py`` is the reference schema: each model's ``__init__`` docstring lists its
fields as ``:type Name: str | int | float | bool | list of X | :class:`...models.X```. This
script reads that file with ``ast`` (the SDK is never executed beyond locating the file), walks
every class reachable from ``ParseNotificationResponse`` and
``ParseLiveStreamProcessNotificationResponse`` and writes one msgspec Struct per class.

Usage (from the repository root)::

    python scripts/gen_events.py            # rewrite mpsflow/events/_generated.py
    python scripts/gen_events.py --check    # exit 1 when the file is out of date

The output is deterministic for a given SDK version and is formatted with ``ruff format``.
"""

from __future__ import annotations

import argparse
import ast
import keyword
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

__all__ = ["main", "render", "render_init"]

_ROOTS = ("ParseNotificationResponse", "ParseLiveStreamProcessNotificationResponse")
_PACKAGE = Path(__file__).resolve().parents[1] / "mpsflow" / "events"
_OUTPUT = _PACKAGE / "_generated.py"
_INIT = _PACKAGE / "__init__.py"
# Hand-written modules re-exported by mpsflow.events (each name from the module defining it),
# minus internal helpers.
_REEXPORT = ("_base", "keys", "locations", "subtasks")
_NOT_REEXPORTED = {
    "MEDIA_RESULT_SET_PATH",
    "MediaRoute",
    "OutcomeMixin",
    "attach_raw",
    "error_text",
    "media_routes",
    "media_subtask",
}
_PRIMITIVES = {"str": "str", "int": "int", "float": "float", "bool": "bool"}

# SDK class -> name used in mpsflow (only the two roots are renamed).
_RENAMES = {
    "ParseNotificationResponse": "Notification",
    "ParseLiveStreamProcessNotificationResponse": "LiveStreamNotification",
}
# Classes whose JSON carries a type discriminator: they may hold an unknown type, so they keep
# the raw JSON of that part (needs a ``__dict__``, which msgspec only allows with ``gc=True``).
_RAW_CONTAINERS = {
    "ActivityResult",
    "AiAnalysisResult",
    "AiContentReviewResult",
    "AiRecognitionResult",
    "MediaProcessTaskResult",
    "SmartSubtitlesResult",
}
# Event-level classes: their Status is PROCESSING/FINISH, not a task outcome.
_EVENTS = {"EditMediaTask", "ExtractBlindWatermarkTask", "ScheduleTask", "WorkflowTask"}
_MIXINS = {
    "ParseNotificationResponse": "NotificationMixin",
    "ParseLiveStreamProcessNotificationResponse": "LiveNotificationMixin",
    "BatchSmartSubtitlesResult": "BatchOutcome",
}
_SECRET_FIELDS = {"S3SecretId", "S3SecretKey"}


@dataclass(frozen=True, slots=True)
class _Field:
    wire: str
    sdk_type: str


@dataclass(frozen=True, slots=True)
class _Model:
    name: str
    doc: str
    fields: tuple[_Field, ...]


def _sdk_models_path() -> Path:
    from tencentcloud.mps.v20190612 import models

    return Path(models.__file__)


def _parse(source: str) -> dict[str, _Model]:
    tree = ast.parse(source)
    out: dict[str, _Model] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        init = next(
            (b for b in node.body if isinstance(b, ast.FunctionDef) and b.name == "__init__"),
            None,
        )
        init_doc = (ast.get_docstring(init) or "") if init else ""
        fields = tuple(
            _Field(name, typ.strip()) for name, typ in re.findall(r":type (\w+):\s*(.+)", init_doc)
        )
        doc = next((ln.strip() for ln in (ast.get_docstring(node) or "").splitlines() if ln), "")
        out[node.name] = _Model(node.name, doc, fields)
    return out


def _ref(sdk_type: str, models: dict[str, _Model]) -> str | None:
    m = re.search(r"models\.(\w+)`", sdk_type) or re.fullmatch(r"list of (\w+)", sdk_type)
    return m.group(1) if m and m.group(1) in models else None


def _reachable(models: dict[str, _Model]) -> list[str]:
    seen: list[str] = []
    stack = list(reversed(_ROOTS))
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.append(name)
        refs = [_ref(f.sdk_type, models) for f in models[name].fields]
        stack.extend(r for r in reversed(refs) if r is not None)
    return seen


def _snake(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()
    return s + "_" if keyword.iskeyword(s) else s


def _annotation(sdk_type: str, models: dict[str, _Model]) -> str:
    ref = _ref(sdk_type, models)
    if sdk_type.startswith("list of "):
        item = _RENAMES.get(ref, ref) if ref else _PRIMITIVES[sdk_type[8:]]
        return f"list[{item}]"
    if ref:
        return _RENAMES.get(ref, ref)
    return _PRIMITIVES[sdk_type]


def _bases(model: _Model) -> tuple[str, str]:
    names = {f.wire for f in model.fields}
    bases: list[str] = []
    if model.name in _MIXINS:
        bases.append(_MIXINS[model.name])
    if model.name in _RAW_CONTAINERS:
        bases.append("RawPayload")
    if names & _SECRET_FIELDS:
        bases.append("RedactedSecrets")
    if model.name not in _EVENTS:
        if "Status" in names:
            bases.append("TaskResult")
        elif "ErrCode" in names:
            bases.append("ErrCodeResult")
    bases.append("MpsStruct")
    kwargs = ", dict=True, gc=True" if model.name in _RAW_CONTAINERS or model.name in _ROOTS else ""
    return ", ".join(bases), kwargs


def _docstring(model: _Model) -> str:
    text = model.doc.replace("\\", "\\\\").replace('"""', "'''").rstrip('"')
    prefix = f"SDK ``{model.name}``"
    return f'    """{prefix}: {text}"""' if text else f'    """{prefix}."""'


def render(source: str, sdk_version: str) -> str:
    """Return the (unformatted) text of ``_generated.py`` for the given ``models.py`` source."""
    models = _parse(source)
    names = _reachable(models)
    out_names = sorted(_RENAMES.get(n, n) for n in names)
    by_out = {_RENAMES.get(n, n): models[n] for n in names}
    base_names = {"BatchOutcome", "ErrCodeResult", "MpsStruct", "RawPayload", "RedactedSecrets"}
    base_names.add("TaskResult")
    root_mixins = sorted(_MIXINS[n] for n in _ROOTS)
    lines = [
        "# Generated by scripts/gen_events.py from tencentcloud-sdk-python-mps"
        f" {sdk_version} (tencentcloud/mps/v20190612/models.py).",
        "# Do not edit by hand. Regenerate: python scripts/gen_events.py",
        '"""msgspec Structs for every MPS notification model of the official SDK (generated)."""',
        "",
        "from __future__ import annotations",
        "",
        "import msgspec",
        "",
        f"from ._base import {', '.join(sorted(base_names))}",
        f"from ._notification import {', '.join(root_mixins)}",
        "",
        "__all__ = [",
        *[f'    "{n}",' for n in out_names],
        "]",
        "",
    ]
    for out_name in out_names:
        model = by_out[out_name]
        bases, kwargs = _bases(model)
        lines += ["", f"class {out_name}({bases}{kwargs}):", _docstring(model), ""]
        for f in model.fields:
            # Every field names its wire key: msgspec's ``rename`` algorithms change between
            # releases (0.23 turned ``stereo3d_type`` into ``Stereo3DType``, not the SDK's
            # ``Stereo3dType``), and a field whose key does not match is silently dropped.
            ann = _annotation(f.sdk_type, models)
            lines.append(
                f'    {_snake(f.wire)}: {ann} | None = msgspec.field(default=None, name="{f.wire}")'
            )
        lines.append("")
    return "\n".join(lines)


def _module_defines(path: Path) -> list[str]:
    """The names of the module's literal ``__all__`` that it defines (not re-exports)."""
    exported: list[str] | None = None
    defined: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names = {t.id for t in node.targets if isinstance(t, ast.Name)}
            if "__all__" in names:
                exported = [str(name) for name in ast.literal_eval(node.value)]
            defined |= names
    if exported is None:
        raise SystemExit(f"{path} has no literal __all__")
    return [name for name in exported if name in defined]


def render_init() -> str:
    """Return the text of ``mpsflow/events/__init__.py``.

    It re-exports every generated Struct with a star import (``_generated.__all__`` lists them)
    and the public names of the hand-written modules by name, so ``__all__`` is those names,
    sorted, plus ``_generated.__all__``.
    """
    lines = [
        "# Generated by scripts/gen_events.py. Do not edit by hand.",
        '"""Typed msgspec models of every MPS notification, and the helpers that route them.',
        "",
        "``Notification`` (task events) and ``LiveStreamNotification`` (live-stream events) are",
        "the roots; every other Struct keeps the official SDK's class name. See",
        "``mpsflow.events.keys`` for routing keys, ``mpsflow.events.subtasks`` for the subtasks",
        'of a notification and ``mpsflow.events.locations`` for input/output locations."""',
        "",
        "from __future__ import annotations",
        "",
        "from . import _generated",
    ]
    names: list[str] = []
    for module in _REEXPORT:
        defined = _module_defines(_PACKAGE / f"{module}.py")
        exported = [n for n in defined if n not in _NOT_REEXPORTED]
        names += exported
        lines.append(f"from .{module} import {', '.join(sorted(exported))}")
    lines.append("from ._generated import *  # noqa: F403 - the names of _generated.__all__")
    lines += ["", "__all__ = [", *[f'    "{n}",' for n in sorted(set(names))], "]"]
    lines += ["__all__ += _generated.__all__", ""]
    return "\n".join(lines)


def _format(text: str, name: str) -> str:
    cfg = Path(__file__).resolve().parents[1] / "pyproject.toml"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text, encoding="utf-8")
        ruff = [sys.executable, "-m", "ruff"]
        fix = ["check", "--config", str(cfg), "-q", "--fix", "--select", "I,RUF022"]
        subprocess.run([*ruff, *fix, str(path)], check=True)
        subprocess.run([*ruff, "format", "--config", str(cfg), "-q", str(path)], check=True)
        return path.read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) ``mpsflow/events/_generated.py``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    source = _sdk_models_path().read_text(encoding="utf-8")
    generated = render(source, metadata.version("tencentcloud-sdk-python-mps"))
    outputs = {
        _OUTPUT: _format(generated, _OUTPUT.name),
        _INIT: _format(render_init(), _INIT.name),
    }
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text("utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path} is out of date; run python scripts/gen_events.py")
        return 1 if stale else 0
    for path in stale:
        path.write_text(outputs[path], encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
