"""mpsflow.tencentcloud.tc3 makes exactly the official SDK's TC3-HMAC-SHA256 Authorization."""

from __future__ import annotations

import json
import warnings

import pytest
from tencentcloud.common import credential
from tencentcloud.common.abstract_client import AbstractClient
from tencentcloud.common.http.request import RequestInternal

from mpsflow.tencentcloud.tc3 import tc3_authorization, tc3_headers, tc3_signature

SECRET_ID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
SECRET_KEY = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"


class _ScfClient(AbstractClient):  # type: ignore[misc]
    _apiVersion = "2018-04-16"
    _endpoint = "scf.tencentcloudapi.com"
    _service = "scf"


def _sdk_headers(
    monkeypatch: pytest.MonkeyPatch, params: dict[str, object], timestamp: int, token: str | None
) -> tuple[dict[str, str], str]:
    """Let the SDK sign an Invoke request at a fixed time; return its headers and body."""
    monkeypatch.setattr("tencentcloud.common.abstract_client.time.time", lambda: timestamp + 0.7)
    client = _ScfClient(credential.Credential(SECRET_ID, SECRET_KEY, token), "ap-guangzhou")
    request = RequestInternal("scf.tencentcloudapi.com", "POST", "/", header={})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # utcfromtimestamp on 3.12+
        client._build_req_with_tc3_signature("Invoke", params, request)
    return request.header, request.data


@pytest.mark.parametrize("token", [None, "temporary-session-token"])
@pytest.mark.parametrize("timestamp", [1_551_113_065, 1_700_000_000, 1_735_689_599])
def test_matches_the_official_sdk(
    monkeypatch: pytest.MonkeyPatch, timestamp: int, token: str | None
) -> None:
    params: dict[str, object] = {
        "FunctionName": "mps-fanout",
        "InvocationType": "Event",
        "Qualifier": "$LATEST",
        "Namespace": "default",
        "ClientContext": json.dumps({"EventType": "WorkflowTask", "Note": "视频 a&b"}),
    }
    sdk, body = _sdk_headers(monkeypatch, params, timestamp, token)
    ours = tc3_headers(
        secret_id=SECRET_ID,
        secret_key=SECRET_KEY,
        token=token,
        service="scf",
        host="scf.tencentcloudapi.com",
        action="Invoke",
        version="2018-04-16",
        payload=body.encode(),
        timestamp=timestamp,
        region="ap-guangzhou",
    )
    assert ours["Authorization"] == sdk["Authorization"]
    for name in ("Content-Type", "Host", "X-TC-Action", "X-TC-Timestamp", "X-TC-Version"):
        assert ours[name] == sdk[name]
    assert ours["X-TC-Region"] == sdk["X-TC-Region"]
    assert ours.get("X-TC-Token") == sdk.get("X-TC-Token")


def _signature(secret_key: str, payload: bytes, host: str = "scf.tencentcloudapi.com") -> str:
    return tc3_signature(
        secret_key,
        service="scf",
        timestamp=1_700_000_000,
        method="POST",
        host=host,
        content_type="application/json",
        payload=payload,
    )


def test_authorization_shape_and_sensitivity() -> None:
    auth = tc3_authorization(
        SECRET_ID,
        SECRET_KEY,
        service="scf",
        timestamp=1_700_000_000,
        method="POST",
        host="scf.tencentcloudapi.com",
        content_type="application/json",
        payload=b"{}",
    )
    assert auth.startswith(
        f"TC3-HMAC-SHA256 Credential={SECRET_ID}/2023-11-14/scf/tc3_request, "
        "SignedHeaders=content-type;host, Signature="
    )
    assert SECRET_KEY not in auth
    signature = auth.rsplit("=", 1)[1]
    assert signature == _signature(SECRET_KEY, b"{}")
    assert signature != _signature(SECRET_KEY, b"{ }")
    assert signature != _signature("other-key", b"{}")
    assert signature != _signature(SECRET_KEY, b"{}", host="scf.internal.tencentcloudapi.com")
