"""mpsflow's own MPS API client (``MpsApiClient``) against the local MPS server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mpsflow.devservers.mps import MpsServer
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.mps import MpsApiClient, MpsAuthError, MpsTaskNotFoundError

SECRET_ID = "AKIDmpsflowMPSTEST00000000000003"
SECRET_KEY = "mpsflow-mps-test-secret-key-0003"
SEED = (
    Path(__file__).resolve().parents[2]
    / "examples/notifications/01_workflow_task_seed_verbatim.json"
)


@pytest.fixture
async def server() -> AsyncIterator[MpsServer]:
    async with MpsServer({SECRET_ID: SECRET_KEY}) as running:
        yield running


def client(server: MpsServer, key: str = SECRET_KEY) -> MpsApiClient:
    return MpsApiClient(
        Credential(SECRET_ID, key), endpoint=server.url, region="ap-guangzhou", rate_limit=None
    )


async def test_the_client_scans_every_page_newest_first(server: MpsServer) -> None:
    for n in range(230):
        task = {"TaskId": f"t{n:03d}", "Status": "FINISH", "ErrCode": 0}
        server.add_task("WorkflowTask", task, create_time=1_767_000_000 + n)
    server.add_task("WorkflowTask", {"TaskId": "busy", "Status": "PROCESSING"})
    async with client(server) as api:
        ids = [task.task_id async for task in api.iter_tasks("FINISH")]
    assert ids == [f"t{n:03d}" for n in reversed(range(230))]
    assert server.calls["DescribeTasks"] == 3  # 100 + 100 + 30


async def test_the_clients_detail_rebuilds_the_notification_verbatim(server: MpsServer) -> None:
    notification = json.loads(SEED.read_bytes())
    task = server.add_from_notification(notification)
    async with client(server) as api:
        detail = await api.describe_task_detail(task.task_id)
        with pytest.raises(MpsTaskNotFoundError):
            await api.describe_task_detail("1250000000-WorkflowTask-unknown")
    rebuilt = detail.notification_json()
    assert rebuilt is not None
    document = json.loads(rebuilt)
    assert document["EventType"] == "WorkflowTask"
    assert document["WorkflowTaskEvent"] == notification["WorkflowTaskEvent"]


async def test_the_client_with_a_wrong_key_gets_an_auth_error(server: MpsServer) -> None:
    async with client(server, key="wrong") as api:
        with pytest.raises(MpsAuthError) as caught:
            await api.verify_credentials()
    assert caught.value.code == "AuthFailure.SignatureFailure"
