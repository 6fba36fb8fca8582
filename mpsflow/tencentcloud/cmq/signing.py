"""The CMQ data-plane request signature (HmacSHA1 / HmacSHA256), shared by client and server.

The rules are those of the official SDKs (``cmq/sign.py`` of ``qcloud-cmq-sdk-py3``,
``CMQClient.java`` of ``tencentyun/cmq-java-sdk``) and of Tencent's CMQ "Signature" page
(cloud.tencent.com/document/product/406/5906): every parameter but ``Signature`` is signed,
names are sorted by code point and have ``_`` replaced by ``.`` *after* sorting, values go in
raw (not URL-encoded), and the string to sign is ``METHOD + host + path + "?" + "k=v&k=v"``.
The signature is the base64 of the HMAC keyed with the SecretKey.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Literal

__all__ = [
    "DEFAULT_PATH",
    "SignatureMethod",
    "sign",
    "string_to_sign",
    "verify",
]

DEFAULT_PATH = "/v2/index.php"
"""The request path every official SDK uses, on legacy and TDMQ hosts alike."""

SignatureMethod = Literal["HmacSHA1", "HmacSHA256"]
"""Value of the ``SignatureMethod`` parameter; anything but ``HmacSHA256`` means SHA1."""

_DIGESTS = {"HmacSHA1": hashlib.sha1, "HmacSHA256": hashlib.sha256}


def string_to_sign(
    http_method: str,
    host: str,
    path: str,
    params: Mapping[str, object],
    *,
    skip_at_values: bool = False,
) -> str:
    """Build the exact text the HMAC covers.

    ``host`` carries no scheme but keeps a port if the endpoint named one. ``Signature`` is
    left out if present. ``skip_at_values`` reproduces the Python SDK's leftover rule that,
    for POST only, drops parameters whose value starts with ``@`` (§A.3 rule 7); the Java SDK
    and this package's client sign them.
    """
    method = http_method.upper()
    drop_at = skip_at_values and method == "POST"
    pairs: list[str] = []
    for name in sorted(params):
        if name == "Signature":
            continue
        value = str(params[name])
        if drop_at and value.startswith("@"):
            continue
        pairs.append(f"{name.replace('_', '.')}={value}")
    return f"{method}{host}{path}?{'&'.join(pairs)}"


def sign(secret_key: str, text: str, method: str = "HmacSHA1") -> str:
    """Return ``base64(HMAC(secret_key, text))`` with SHA256 for ``HmacSHA256``, else SHA1."""
    digest = _DIGESTS.get(method, hashlib.sha1)
    mac = hmac.new(secret_key.encode("utf-8"), text.encode("utf-8"), digest)
    return base64.b64encode(mac.digest()).decode("ascii")


def verify(secret_key: str, text: str, method: str, signature: str) -> bool:
    """Compare ``signature`` with the expected one in constant time."""
    return hmac.compare_digest(sign(secret_key, text, method), signature)
