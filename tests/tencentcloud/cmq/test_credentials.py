"""Credential providers, and temporary keys (Token) end to end against the local server."""

from __future__ import annotations

import anyio
import pytest

from mpsflow.clock import FakeClock
from mpsflow.errors import ConfigurationError
from mpsflow.tencentcloud.cmq import (
    CmqAuthError,
    CmqClient,
    Credential,
    CredentialProvider,
    EnvironmentCredentials,
    RefreshingCredentials,
    StaticCredentials,
)
from tests.plugins.cmq_server import CmqServerFactory


def test_secrets_stay_out_of_reprs() -> None:
    credential = Credential("AKIDpublic", "s3cr3t-key", token="s3cr3t-token", expires_at=5.0)
    for text in (repr(credential), str(credential), repr(StaticCredentials(credential))):
        assert "AKIDpublic" in text
        assert "s3cr3t" not in text


async def test_static_and_environment_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    credential = Credential("id", "key")
    assert await StaticCredentials(credential).get_credential() is credential
    environ = {"TENCENTCLOUD_SECRETID": "sid", "TENCENTCLOUD_SECRETKEY": "skey"}
    assert await EnvironmentCredentials(environ).get_credential() == Credential("sid", "skey")
    environ["TENCENTCLOUD_SESSIONTOKEN"] = "tok"
    assert (await EnvironmentCredentials(environ).get_credential()).token == "tok"
    monkeypatch.delenv("TENCENTCLOUD_SECRETKEY", raising=False)
    monkeypatch.setenv("TENCENTCLOUD_SECRETID", "sid")
    with pytest.raises(ConfigurationError):
        await EnvironmentCredentials().get_credential()
    assert isinstance(EnvironmentCredentials(), CredentialProvider)


async def test_refreshing_provider_fetches_once_until_close_to_expiry() -> None:
    clock = FakeClock()
    fetched: list[Credential] = []

    async def fetch() -> Credential:
        await anyio.lowlevel.checkpoint()
        credential = Credential("id", f"key-{len(fetched)}", "tok", clock.time() + 100)
        fetched.append(credential)
        return credential

    provider = RefreshingCredentials(fetch, refresh_before=10, clock=clock)
    results: list[Credential] = []

    async def get() -> None:
        results.append(await provider.get_credential())

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(get)
    assert len(fetched) == 1
    assert results == [fetched[0]] * 5
    clock.advance(89)
    assert await provider.get_credential() is fetched[0]
    clock.advance(1)
    assert (await provider.get_credential()).secret_key == "key-1"
    provider.invalidate()
    assert (await provider.get_credential()).secret_key == "key-2"
    assert "key-2" not in repr(provider)


async def test_token_flow_with_a_refreshing_provider(
    cmq_server_factory: CmqServerFactory,
) -> None:
    clock = FakeClock()
    now = clock.time()
    issued = [
        Credential("AKIDtmp1", "tmp-key-1", token="token-1", expires_at=now + 100),
        Credential("AKIDtmp2", "tmp-key-2", token="token-2", expires_at=now + 1000),
    ]
    server = await cmq_server_factory(credentials=list(issued), clock=clock)
    fetches = 0

    async def fetch() -> Credential:
        nonlocal fetches
        fetches += 1
        return issued[fetches - 1]

    provider = RefreshingCredentials(fetch, refresh_before=10, clock=clock)
    async with CmqClient(server.url, provider, clock=clock) as client:
        await client.send("tmp", "one")
        await client.send("tmp", "two")
        assert fetches == 1
        clock.advance(95)
        await client.send("tmp", "three")
        assert fetches == 2
    assert len(server.queue("tmp")) == 3

    clock.advance(5)
    async with CmqClient(server.url, issued[0], clock=clock) as stale:
        with pytest.raises(CmqAuthError, match="expired"):
            await stale.send("tmp", "four")
    assert clock.sleeps == []


async def test_scf_environment_keys_sign_with_their_session_token(
    cmq_server_factory: CmqServerFactory,
) -> None:
    server = await cmq_server_factory(
        credentials=[Credential("AKIDscf", "scf-key", token="scf-session-token")]
    )
    environ = {"TENCENTCLOUD_SECRETID": "AKIDscf", "TENCENTCLOUD_SECRETKEY": "scf-key"}
    async with CmqClient(server.url, EnvironmentCredentials(environ)) as client:
        with pytest.raises(CmqAuthError):
            await client.send("scf", "x")
        environ["TENCENTCLOUD_SESSIONTOKEN"] = "scf-session-token"
        await client.send("scf", "x")
    assert len(server.queue("scf")) == 1
