"""A bare CMQ consumer loop, the baseline for CMQ benchmarks.

``bare_consume`` is BatchReceiveMessage + BatchDeleteMessage written with nothing but aiohttp,
the signing function and ``json.loads``: no typed models, retries or credential providers. Run
this file to compare it with the same loop on :class:`mpsflow.tencentcloud.cmq.CmqClient`,
both against the
local server in this process (``python benchmarks/cmq_bare.py --messages 20000``); it prints
messages per second for each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit

import aiohttp
import anyio

from mpsflow.devservers.cmq import CmqServer
from mpsflow.tencentcloud.cmq.client import CmqClient
from mpsflow.tencentcloud.cmq.credentials import Credential
from mpsflow.tencentcloud.cmq.signing import DEFAULT_PATH, sign, string_to_sign

__all__ = ["bare_consume", "client_consume", "main"]

_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _call(
    session: aiohttp.ClientSession,
    endpoint: str,
    credential: Credential,
    params: dict[str, str],
) -> dict[str, object]:
    host = urlsplit(endpoint).netloc
    form = {
        **params,
        "SecretId": credential.secret_id,
        "Nonce": str(random.randint(1, 2**62)),
        "Timestamp": str(int(time.time())),
        "SignatureMethod": "HmacSHA256",
    }
    text = string_to_sign("POST", host, DEFAULT_PATH, form)
    form["Signature"] = sign(credential.secret_key, text, "HmacSHA256")
    async with session.post(
        f"{endpoint}{DEFAULT_PATH}", data=urlencode(form).encode(), headers=_FORM
    ) as reply:
        answer: dict[str, object] = json.loads(await reply.read())
        return answer


async def bare_consume(
    endpoint: str, credential: Credential, queue: str, count: int, *, batch: int = 16
) -> int:
    """Receive and delete ``count`` messages in batches; returns how many were consumed."""
    done = 0
    async with aiohttp.ClientSession() as session:
        while done < count:
            params = {"Action": "BatchReceiveMessage", "queueName": queue}
            params |= {"numOfMsg": str(batch), "pollingWaitSeconds": "1"}
            answer = await _call(session, endpoint, credential, params)
            messages = answer.get("msgInfoList")
            if answer.get("code") != 0 or not isinstance(messages, list):
                continue
            delete = {"Action": "BatchDeleteMessage", "queueName": queue}
            for index, message in enumerate(messages, start=1):
                delete[f"receiptHandle.{index}"] = message["receiptHandle"]
            await _call(session, endpoint, credential, delete)
            done += len(messages)
    return done


async def client_consume(
    endpoint: str, credential: Credential, queue: str, count: int, *, batch: int = 16
) -> int:
    """The same loop on :class:`CmqClient` (typed messages, retries, per-handle errors)."""
    done = 0
    async with CmqClient(endpoint, credential) as client:
        while done < count:
            messages = await client.batch_receive(queue, batch, 1)
            if messages:
                await client.batch_delete(queue, [m.receipt_handle for m in messages])
                done += len(messages)
    return done


async def _fill(server: CmqServer, queue: str, count: int) -> None:
    local = server.create_queue(queue)
    for index in range(count):
        local.put(json.dumps({"EventType": "WorkflowTask", "n": index}))


async def _run(messages: int) -> None:
    credential = Credential("AKIDbenchmark", "benchmark-key")
    async with CmqServer({credential.secret_id: credential.secret_key}) as server:
        rates: dict[str, float] = {}
        for name, consume in (("bare aiohttp", bare_consume), ("CmqClient", client_consume)):
            await _fill(server, "bench", messages)
            started = time.perf_counter()
            await consume(server.url, credential, "bench", messages)
            rates[name] = messages / (time.perf_counter() - started)
            print(f"{name:>12}: {rates[name]:10.0f} messages/s")
        print(f"CmqClient / bare = {rates['CmqClient'] / rates['bare aiohttp']:.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    """Compare the bare loop with the CmqClient loop against an in-process local server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args(argv)
    anyio.run(_run, args.messages)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
