"""pytest fixtures: the sample notifications in ``tests/samples``.

Task notifications are ``tests/samples/*.json``, live ones ``tests/samples/live/*.json``: the
first is verbatim from Tencent's documentation, the rest are schema-exact and signed with
:data:`SAMPLE_KEY` (``examples/notifications`` holds three of them for the README's commands).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

__all__ = [
    "LIVE_SAMPLE_PATHS",
    "SAMPLES_DIR",
    "SAMPLE_KEY",
    "SAMPLE_PATHS",
    "live_sample_bytes",
    "live_sample_path",
    "sample_bytes",
    "sample_path",
    "samples_dir",
    "seed_sample",
]

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
"""The task-notification samples (the live ones in its ``live`` folder)."""

SAMPLE_KEY = "mps-sample-notify-key"
"""The NotifyKey the generated samples are signed with."""

_F = TypeVar("_F", bound=Callable[..., Any])

SAMPLE_PATHS: tuple[Path, ...] = tuple(sorted(SAMPLES_DIR.glob("*.json")))
"""Every task-notification sample (``EventType`` at the top)."""

LIVE_SAMPLE_PATHS: tuple[Path, ...] = tuple(sorted((SAMPLES_DIR / "live").glob("*.json")))
"""Every live-stream notification sample (``NotificationType`` at the top)."""


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The folder of task-notification samples."""
    return SAMPLES_DIR


def _each(paths: tuple[Path, ...]) -> Callable[[_F], _F]:
    """A fixture decorator parametrised over ``paths`` (one test per sample, named by its stem)."""
    return cast("Callable[[_F], _F]", pytest.fixture(params=paths, ids=[p.stem for p in paths]))


@_each(SAMPLE_PATHS)
def sample_path(request: pytest.FixtureRequest) -> Path:
    """Each task-notification sample in turn (parametrised)."""
    return cast(Path, request.param)


@_each(LIVE_SAMPLE_PATHS)
def live_sample_path(request: pytest.FixtureRequest) -> Path:
    """Each live-notification sample in turn (parametrised)."""
    return cast(Path, request.param)


@pytest.fixture
def sample_bytes(sample_path: Path) -> bytes:
    """The raw bytes of each task-notification sample in turn."""
    return sample_path.read_bytes()


@pytest.fixture
def live_sample_bytes(live_sample_path: Path) -> bytes:
    """The raw bytes of each live-notification sample in turn."""
    return live_sample_path.read_bytes()


@pytest.fixture(scope="session")
def seed_sample() -> bytes:
    """The verbatim seed sample (``01_workflow_task_seed_verbatim.json``)."""
    return (SAMPLES_DIR / "01_workflow_task_seed_verbatim.json").read_bytes()
