"""Every generated Struct reads and writes exactly the JSON keys of the official SDK's model.

The wire names come from the installed ``tencentcloud-sdk-python-mps``: what its
``AbstractModel._serialize`` emits (each ``_Name`` attribute as ``Name``). msgspec 0.23 changed
``rename="pascal"`` (``stereo3d_type`` became ``Stereo3DType``, not the SDK's ``Stereo3dType``),
and a field whose key does not match is silently dropped on decode; these tests catch that for
every field of every class, whatever msgspec version is installed.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tencentcloud.mps.v20190612 import models as sdk_models

from mpsflow.events import MpsStruct, VideoTemplateInfo, _generated

_SDK_NAMES = {
    "Notification": "ParseNotificationResponse",
    "LiveStreamNotification": "ParseLiveStreamProcessNotificationResponse",
}
"""mpsflow class -> SDK class, where they differ (only the two roots are renamed)."""

_CLASSES = sorted(_generated.__all__)


def _struct(name: str) -> type[msgspec.Struct]:
    cls = getattr(_generated, name)
    assert isinstance(cls, type)
    assert issubclass(cls, msgspec.Struct)
    return cls


def _sdk_wire_names(sdk_name: str) -> set[str]:
    """The keys the SDK serialises for ``sdk_name`` (every attribute, None included)."""
    model = getattr(sdk_models, sdk_name)()
    keys: dict[str, Any] = model._serialize(allow_none=True)
    return set(keys)


def _encode_names(cls: type[msgspec.Struct]) -> set[str]:
    return {f.encode_name for f in msgspec.structs.fields(cls)}


def _sdk_reachable() -> set[str]:
    """Every SDK model class reachable from the two notification roots, found by letting the
    SDK's own ``_deserialize`` build each field's value."""
    seen: set[str] = set()
    roots = (
        sdk_models.ParseNotificationResponse,
        sdk_models.ParseLiveStreamProcessNotificationResponse,
    )
    stack: list[Any] = [root() for root in roots]
    while stack:
        model = stack.pop()
        if type(model).__name__ in seen:
            continue
        seen.add(type(model).__name__)
        stack.extend(
            child
            for key in model._serialize(allow_none=True)
            if (child := _child_model(type(model), key)) is not None
        )
    return seen


def _child_model(sdk_cls: type[Any], key: str) -> Any:
    """The SDK model ``_deserialize`` builds for ``key`` of ``sdk_cls`` (None for scalars)."""
    probes: tuple[dict[str, Any], ...] = ({key: {}}, {key: [{}]})
    for probe in probes:
        model = sdk_cls()
        try:
            model._deserialize(probe)
        except AttributeError:  # an object field given a list
            continue
        value = vars(model)[f"_{key}"]  # not the property: some warn that they are deprecated
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, sdk_models.AbstractModel):
            return value
    return None


def test_every_generated_class_has_an_sdk_model() -> None:
    for name in _CLASSES:
        sdk_name = _SDK_NAMES.get(name, name)
        assert hasattr(sdk_models, sdk_name), f"{name}: no SDK model {sdk_name}"


def test_generated_classes_cover_every_sdk_model_of_the_notifications() -> None:
    ours = {_SDK_NAMES.get(name, name) for name in _CLASSES}
    assert _sdk_reachable() == ours


@pytest.mark.parametrize("name", _CLASSES)
def test_field_wire_names_equal_the_sdk(name: str) -> None:
    cls = _struct(name)
    expected = _sdk_wire_names(_SDK_NAMES.get(name, name))
    actual = _encode_names(cls)
    missing, unknown = sorted(expected - actual), sorted(actual - expected)
    assert actual == expected, f"{name}: missing {missing}, unknown to the SDK {unknown}"


def _explicit_wire_names() -> dict[str, dict[str, str | None]]:
    """Per generated class: field -> the ``name=`` its ``msgspec.field(...)`` gives (or None)."""
    tree = ast.parse(Path(str(_generated.__file__)).read_text(encoding="utf-8"))
    out: dict[str, dict[str, str | None]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        assert not any(k.arg == "rename" for k in node.keywords), node.name
        fields: dict[str, str | None] = {}
        for stmt in node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                call = stmt.value
                names = [
                    k.value.value
                    for k in (call.keywords if isinstance(call, ast.Call) else [])
                    if k.arg == "name" and isinstance(k.value, ast.Constant)
                ]
                fields[stmt.target.id] = str(names[0]) if names else None
        out[node.name] = fields
    return out


def test_every_field_names_its_wire_key_explicitly() -> None:
    """No field relies on a rename algorithm (msgspec's, or MpsStruct's): each names its key."""
    explicit = _explicit_wire_names()
    assert set(explicit) == set(_CLASSES)
    for name, fields in explicit.items():
        encoded = {f.name: f.encode_name for f in msgspec.structs.fields(_struct(name))}
        assert fields == encoded, name


def test_mpsstruct_renames_nothing() -> None:
    class Probe(MpsStruct):
        stereo3d_type: str | None = None

    (field,) = msgspec.structs.fields(Probe)
    assert field.encode_name == "stereo3d_type"


def test_stereo3d_type_round_trips() -> None:
    """The field msgspec 0.23's ``rename="pascal"`` spelled ``Stereo3DType``."""
    raw = b'{"Codec": "libx265", "Stereo3dType": "side_by_side"}'
    info = msgspec.json.decode(raw, type=VideoTemplateInfo)
    assert info.stereo3d_type == "side_by_side"
    assert msgspec.json.decode(msgspec.json.encode(info)) == {
        "Codec": "libx265",
        "Stereo3dType": "side_by_side",
    }


@functools.cache
def _type_infos() -> dict[type[msgspec.Struct], msgspec.inspect.StructType]:
    structs = [_struct(name) for name in _CLASSES]
    infos = msgspec.inspect.multi_type_info(structs)
    assert all(isinstance(info, msgspec.inspect.StructType) for info in infos)
    return {info.cls: info for info in infos if isinstance(info, msgspec.inspect.StructType)}


def _sample(tp: Any) -> Any:
    """A JSON value of type ``tp`` that survives a decode/encode round trip (never null)."""
    if isinstance(tp, msgspec.inspect.UnionType):
        (tp,) = [t for t in tp.types if not isinstance(t, msgspec.inspect.NoneType)]
    samples: dict[type[msgspec.inspect.Type], Any] = {
        msgspec.inspect.StrType: "x",
        msgspec.inspect.IntType: 1,
        msgspec.inspect.FloatType: 1.5,
        msgspec.inspect.BoolType: True,
        msgspec.inspect.ListType: [],
        msgspec.inspect.StructType: {},
    }
    return samples[type(tp)]


@pytest.mark.parametrize("name", _CLASSES)
def test_every_sdk_key_decodes_and_encodes_back(name: str) -> None:
    """A document holding every key the SDK writes keeps every one through decode + encode."""
    cls = _struct(name)
    info = _type_infos()[cls]
    document = {f.encode_name: _sample(f.type) for f in info.fields}
    assert set(document) == _sdk_wire_names(_SDK_NAMES.get(name, name))
    decoded = msgspec.json.decode(msgspec.json.encode(document), type=cls)
    assert msgspec.json.decode(msgspec.json.encode(decoded)) == document
