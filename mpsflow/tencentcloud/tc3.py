"""TC3-HMAC-SHA256: the request signature of Tencent Cloud API 3.0 (SCF, MPS, TDMQ, …).

Mirrors the official SDK's rules (``tencentcloud/common/abstract_client.py``): the canonical
request signs the method, path, query, the ``content-type`` and ``host`` headers and the
SHA-256 of the body; the key is derived from the secret key, the UTC date of the timestamp
and the service name. ``tc3_headers`` builds every header of a signed JSON POST;
``tc3_authorization`` computes the ``Authorization`` value alone, which is also how a server
(or a test) checks a received request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from typing_extensions import NotRequired, Unpack

__all__ = ["ALGORITHM", "Tc3Request", "tc3_authorization", "tc3_headers", "tc3_signature"]

ALGORITHM = "TC3-HMAC-SHA256"
_SIGNED_HEADERS = "content-type;host"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _utc_date(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


class Tc3Request(TypedDict):
    """What a TC3 signature covers: the keyword arguments of the signing functions."""

    service: str
    timestamp: int
    method: str
    host: str
    content_type: str
    payload: bytes
    uri: NotRequired[str]
    """The request path, ``/`` when left out."""
    query: NotRequired[str]
    """The canonical query string, empty when left out."""


def tc3_signature(secret_key: str, **request: Unpack[Tc3Request]) -> str:
    """Return the hex signature of one request (the ``Signature=`` part)."""
    service = request["service"]
    timestamp = request["timestamp"]
    content_type = request["content_type"]
    host = request["host"]
    canonical_request = "\n".join(
        (
            request["method"].upper(),
            request.get("uri", "/"),
            request.get("query", ""),
            f"content-type:{content_type}\nhost:{host}\n",
            _SIGNED_HEADERS,
            hashlib.sha256(request["payload"]).hexdigest(),
        )
    )
    date = _utc_date(timestamp)
    string_to_sign = "\n".join(
        (
            ALGORITHM,
            str(timestamp),
            f"{date}/{service}/tc3_request",
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        )
    )
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def tc3_authorization(secret_id: str, secret_key: str, **request: Unpack[Tc3Request]) -> str:
    """Return the ``Authorization`` header value for one request."""
    signature = tc3_signature(secret_key, **request)
    scope = f"{_utc_date(request['timestamp'])}/{request['service']}/tc3_request"
    return (
        f"{ALGORITHM} Credential={secret_id}/{scope}, "
        f"SignedHeaders={_SIGNED_HEADERS}, Signature={signature}"
    )


def tc3_headers(
    *,
    secret_id: str,
    secret_key: str,
    token: str | None,
    service: str,
    host: str,
    action: str,
    version: str,
    payload: bytes,
    timestamp: int,
    region: str | None = None,
    content_type: str = "application/json",
    request_client: str = "mpsflow",
) -> dict[str, str]:
    """Every header of a signed API 3.0 POST of ``payload`` to ``https://{host}/``."""
    headers = {
        "Authorization": tc3_authorization(
            secret_id,
            secret_key,
            service=service,
            timestamp=timestamp,
            method="POST",
            host=host,
            content_type=content_type,
            payload=payload,
        ),
        "Content-Type": content_type,
        "Host": host,
        "X-TC-Action": action,
        "X-TC-RequestClient": request_client,
        "X-TC-Timestamp": str(timestamp),
        "X-TC-Version": version,
    }
    if region:
        headers["X-TC-Region"] = region
    if token:
        headers["X-TC-Token"] = token
    return headers
