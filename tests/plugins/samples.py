"""pytest fixtures: the sample notifications of the shared research folder.

``shared/`` is the sibling of the repository root (``../shared``); set ``MPSFLOW_SHARED`` to
point elsewhere. Task notifications are ``samples/*.json``, live ones ``samples/live/*.json``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

__all__ = [
    "LIVE_SAMPLE_PATHS",
    "SAMPLE_KEY",
    "SAMPLE_PATHS",
    "SHARED_DIR",
    "live_sample_bytes",
    "live_sample_path",
    "sample_bytes",
    "sample_path",
    "samples_dir",
    "seed_sample",
    "shared_dir",
]

SHARED_DIR = Path(
    os.environ.get("MPSFLOW_SHARED") or Path(__file__).resolve().parents[2].parent / "shared"
)
"""The shared research folder (protocol notes and sample notifications)."""

SAMPLE_KEY = "mps-sample-notify-key"
"""The NotifyKey the generated samples are signed with."""

_F = TypeVar("_F", bound=Callable[..., Any])

SAMPLE_PATHS: tuple[Path, ...] = tuple(sorted((SHARED_DIR / "samples").glob("*.json")))
"""Every task-notification sample (``EventType`` at the top)."""

LIVE_SAMPLE_PATHS: tuple[Path, ...] = tuple(
    sorted((SHARED_DIR / "samples" / "live").glob("*.json"))
)
"""Every live-stream notification sample (``NotificationType`` at the top)."""


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared research folder."""
    return SHARED_DIR


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The folder of task-notification samples."""
    return SHARED_DIR / "samples"


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
    return (SHARED_DIR / "samples" / "01_workflow_task_seed_verbatim.json").read_bytes()
