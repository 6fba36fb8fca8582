"""Decode benchmark: mpsflow's typed decode against the alternatives, as ratios from one run.

Usage::

    python benchmarks/decode.py [--quick] [--readme benchmarks/README.md]

For each payload (small, seed, large; pretty and compact) it times, best of N repeats with
``time.perf_counter``: ``mpsflow.codec.decode`` (bytes -> typed Structs, unknown-type check
included), stdlib ``json.loads``, ``orjson.loads``, a pydantic v2 model generated from the same
schema (``model_validate_json``) and the official SDK (``json.loads`` +
``ParseNotificationResponse()._deserialize``). ``json``/``orjson`` only build dicts; pydantic,
the SDK and mpsflow build typed objects. With ``--readme`` the table replaces the ``## decode``
section of that file.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script: make the repository root importable (for ``mpsflow`` and ``benchmarks``).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import datetime as dt
import gc
import json
import os
import platform
import re
import time
import typing
from collections.abc import Callable
from importlib import metadata
from typing import Any

import msgspec
import orjson
import pydantic
from tencentcloud.mps.v20190612 import models as sdk_models

from benchmarks._data import Payload, payloads
from mpsflow.codec import decode
from mpsflow.events import Notification

__all__ = ["build_pydantic_model", "main"]

_Decoder = Callable[[bytes], Any]


def build_pydantic_model(root: type[msgspec.Struct]) -> type[pydantic.BaseModel]:
    """A pydantic v2 model mirroring ``root``'s whole Struct tree (wire-name aliases, optional)."""
    built: dict[type, type[pydantic.BaseModel]] = {}
    config = pydantic.ConfigDict(extra="ignore", populate_by_name=True)

    def convert(tp: Any) -> Any:
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            return model(tp)
        origin = typing.get_origin(tp)
        if origin is list:
            (item,) = typing.get_args(tp)
            return list[convert(item)]  # type: ignore[misc]
        if origin is typing.Union or type(tp).__name__ == "UnionType":
            args = tuple(convert(a) for a in typing.get_args(tp))
            return typing.Union[args]  # noqa: UP007
        return tp

    def model(cls: type[msgspec.Struct]) -> type[pydantic.BaseModel]:
        if cls not in built:
            hints = typing.get_type_hints(cls)
            fields: dict[str, Any] = {}
            for name, wire in zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True):
                fields[name] = (convert(hints[name]), pydantic.Field(default=None, alias=wire))
            built[cls] = pydantic.create_model(f"P{cls.__name__}", __config__=config, **fields)
        return built[cls]

    return model(root)


def _sdk_decode(data: bytes) -> Any:
    response = sdk_models.ParseNotificationResponse()
    response._deserialize(json.loads(data))
    return response


def _contenders() -> dict[str, _Decoder]:
    pydantic_model = build_pydantic_model(Notification)
    return {
        "mpsflow": decode,
        "json": json.loads,
        "orjson": orjson.loads,
        "pydantic": pydantic_model.model_validate_json,
        "sdk": _sdk_decode,
    }


def _best_seconds(
    contenders: dict[str, _Decoder], data: bytes, repeats: int, budget: float
) -> dict[str, float]:
    """Best per-call time of each contender over ``repeats`` rounds of loops of ~``budget`` s.

    The contenders take turns inside every round, so a burst of load on a shared machine hits
    all of them alike instead of skewing one ratio.
    """
    loops = {}
    for name, fn in contenders.items():
        start = time.perf_counter()
        for _ in range(3):
            fn(data)
        loops[name] = max(1, int(budget * 3 / max(time.perf_counter() - start, 1e-7)))
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeats):
        for name, fn in contenders.items():
            n = loops[name]
            t0 = time.perf_counter()
            for _ in range(n):
                fn(data)
            best[name] = min(best[name], (time.perf_counter() - t0) / n)
    return best


def _check_equivalence(contenders: dict[str, _Decoder], payload: Payload) -> None:
    """Every contender must accept the payload; mpsflow and pydantic must agree on content."""
    typed = decode(payload.data)
    ours = json.loads(msgspec.json.encode(typed))
    theirs = contenders["pydantic"](payload.data).model_dump(by_alias=True, exclude_none=True)
    if ours != json.loads(json.dumps(theirs)):
        raise SystemExit(f"pydantic model disagrees with mpsflow on {payload.name}")
    for fn in contenders.values():
        fn(payload.data)


def run(*, quick: bool) -> list[dict[str, Any]]:
    """Time every contender on every payload; return one row per payload."""
    contenders = _contenders()
    repeats, budget = (5, 0.005) if quick else (60, 0.01)
    rows = []
    gc.collect()
    for payload in payloads():
        _check_equivalence(contenders, payload)
        times = _best_seconds(contenders, payload.data, repeats, budget)
        rows.append({"payload": payload, "times": times})
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| payload | bytes | subtasks | mpsflow µs | events/s | MB/s "
        "| × json | × orjson | × pydantic | × SDK |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        payload: Payload = row["payload"]
        t: dict[str, float] = row["times"]
        ours = t["mpsflow"]
        subtasks = sum(1 for _ in decode(payload.data).subtasks())
        ratios = " | ".join(f"{t[k] / ours:.2f}" for k in ("json", "orjson", "pydantic", "sdk"))
        lines.append(
            f"| {payload.name} | {len(payload.data)} | {subtasks} | {ours * 1e6:.2f} "
            f"| {1 / ours:,.0f} | {len(payload.data) / ours / 1e6:.0f} | {ratios} |"
        )
    return "\n".join(lines)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = (
        f"msgspec {msgspec.__version__}, orjson {orjson.__version__}, "
        f"pydantic {pydantic.VERSION}, "
        f"tencentcloud-sdk-python-mps {metadata.version('tencentcloud-sdk-python-mps')}"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{dt.date.today().isoformat()}, {cpu}, {os.cpu_count()} CPUs shared with other jobs "
        f"(load average {load:.1f} at the end), one core used, "
        f"Python {platform.python_version()}; {versions}"
    )


_TARGETS = (
    ("seed/pretty", "orjson", 1.0),
    ("seed/compact", "orjson", 1.4),
    ("seed/pretty", "sdk", 8.0),
    ("seed/compact", "sdk", 8.0),
)

_FINDINGS = (
    "Where the time goes (seed sample): msgspec's typed decode alone is about as fast as "
    "`orjson.loads` on the pretty document (about 1.0x) and about 1.45x on the compact one; "
    "the pretty form costs extra mostly in whitespace scanning (skipping every value of the "
    "pretty seed without building anything already takes about half of orjson's full time). "
    "`decode` then adds about 0.4 µs: the check for unknown `EventType`/subtask `Type` "
    "values that decides whether the slow path must keep raw JSON (about 0.2 µs, unrolled "
    "loops, no allocation) and the entry checks (bytes, size limit). Already applied: one "
    "reused `Decoder`, `gc=False` on every Struct (the 8 classes that may keep `raw` need "
    "`gc=True` for their `__dict__`; measured no difference), no wrapper probing on the hot "
    "path. Not applied because they would break the contract: `array_like` (JSON objects), "
    "non-optional fields with non-None defaults (breaks the SDK-exact round trip), "
    "`msgspec.Raw` for input echoes (nested nulls would survive encode)."
)


def _targets(rows: list[dict[str, Any]]) -> list[str]:
    by_name = {row["payload"].name: row["times"] for row in rows}
    lines = []
    for payload, other, goal in _TARGETS:
        t = by_name[payload]
        ratio = t[other] / t["mpsflow"]
        verdict = "met" if ratio >= goal else f"missed by {(1 - ratio / goal) * 100:.0f}%"
        lines.append(
            f"- {payload} vs {other}: target ≥ {goal:.1f}x, measured {ratio:.2f}x ({verdict})"
        )
    return lines


def _section(rows: list[dict[str, Any]], quick: bool) -> str:
    return "\n".join(
        [
            "## decode",
            "",
            "`python benchmarks/decode.py" + (" --quick" if quick else "") + "` "
            f"({_machine()}). Best of N timed loops, `time.perf_counter`, contenders "
            "interleaved in every round; the ratio columns are *their time / mpsflow's time* "
            "(higher = mpsflow faster). mpsflow = `mpsflow.codec.decode(bytes)` into typed "
            "Structs, unknown-type check included; json/orjson build plain dicts; pydantic = a "
            "v2 model generated programmatically from the same Struct tree (all 300+ classes, "
            "wire-name aliases, checked to decode to the same content), `model_validate_json`; "
            "SDK = `json.loads` + `ParseNotificationResponse()._deserialize`.",
            "",
            _table(rows),
            "",
            "Targets (one core):",
            "",
            *_targets(rows),
            "",
            _FINDINGS,
            "",
        ]
    )


def _write_readme(path: Path, section: str) -> None:
    intro = "# Benchmarks\n\nSpeed claims of mpsflow, each measured as ratios in one run.\n\n"
    text = path.read_text(encoding="utf-8") if path.exists() else intro
    pattern = re.compile(r"^## decode\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, optionally write it into a README."""
    parser = argparse.ArgumentParser(description="mpsflow decode benchmark")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    parser.add_argument("--readme", type=Path, help="write the table into this README")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    section = _section(rows, args.quick)
    print(section)
    if args.readme:
        _write_readme(args.readme, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
