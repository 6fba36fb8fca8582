"""The Source contract suite's fixtures: every case runs once per source harness.

A case names itself with ``@pytest.mark.contract_case(Case.X)``; each harness's declared
exclusions (``not_applicable``, with the reason) and known violations (strict xfail) become
marks on that case's parameter for that source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mpsflow.tencentcloud.cmq.credentials import Credential
from tests.plugins.cmq_server import CmqServerFactory
from tests.sources.harness import HARNESSES, Case, Env, SourceHarness


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "contract_case(case): the Source contract case a test checks, for every source"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness_type" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("contract_case")
    if marker is None or not isinstance(marker.args[0], Case):
        raise pytest.UsageError(f"{metafunc.definition.name} needs @pytest.mark.contract_case")
    case: Case = marker.args[0]
    metafunc.parametrize(
        "harness_type",
        [pytest.param(kind, id=kind.name, marks=kind.marks(case)) for kind in HARNESSES],
    )


@pytest.fixture
async def harness(
    harness_type: type[SourceHarness],
    tmp_path: Path,
    cmq_server_factory: CmqServerFactory,
    cmq_credential: Credential,
) -> AsyncIterator[SourceHarness]:
    """The source under test, with its channel ready."""
    harness = harness_type(Env(tmp_path, cmq_server_factory, cmq_credential))
    await harness.setup()
    try:
        yield harness
    finally:
        await harness.aclose()
