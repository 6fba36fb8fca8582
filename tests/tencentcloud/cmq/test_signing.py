"""CMQ request signing: the five worked vectors of the protocol notes, and the official SDK."""

from __future__ import annotations

import string

import pytest
from cmq.sign import Sign
from hypothesis import given
from hypothesis import strategies as st

from mpsflow.tencentcloud.cmq.signing import DEFAULT_PATH, sign, string_to_sign, verify

SID = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
SK = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"
LEGACY = "cmq-queue-gz.api.qcloud.com"
TDMQ = "cmq-gz.public.tencenttdmq.com"


def _common(nonce: int, method: str = "HmacSHA1") -> dict[str, object]:
    return {
        "Nonce": nonce,
        "RequestClient": "SDK_Python_1.3",
        "SecretId": SID,
        "SignatureMethod": method,
        "Timestamp": 1465185768,
    }


_RECEIVE = {"Action": "ReceiveMessage", "queueName": "mps-notify", "pollingWaitSeconds": 10}
_NOTE = '{"EventType":"WorkflowTask","Note":"a b&c=d 视频"}'


@pytest.mark.parametrize(
    ("method", "host", "params", "text", "signature"),
    [
        pytest.param(
            "POST",
            LEGACY,
            {**_common(11886), **_RECEIVE},
            "POSTcmq-queue-gz.api.qcloud.com/v2/index.php?Action=ReceiveMessage&Nonce=11886"
            "&RequestClient=SDK_Python_1.3&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
            "&SignatureMethod=HmacSHA1&Timestamp=1465185768&pollingWaitSeconds=10"
            "&queueName=mps-notify",
            "VG2/Phd19sykgayCWZifQzS+rJA=",
            id="1-receive-post-sha1-legacy-host",
        ),
        pytest.param(
            "POST",
            TDMQ,
            {**_common(11886, "HmacSHA256"), **_RECEIVE},
            "POSTcmq-gz.public.tencenttdmq.com/v2/index.php?Action=ReceiveMessage&Nonce=11886"
            "&RequestClient=SDK_Python_1.3&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
            "&SignatureMethod=HmacSHA256&Timestamp=1465185768&pollingWaitSeconds=10"
            "&queueName=mps-notify",
            "jypR/8auY4c78G7oLq4Qxnmjiwg0dWZUpoTQ9YLHpns=",
            id="2-receive-post-sha256-tdmq-host",
        ),
        pytest.param(
            "GET",
            LEGACY,
            {
                **_common(42),
                "Action": "BatchDeleteMessage",
                "Token": "tmpToken123",
                "queueName": "mps-notify",
                "receiptHandle.1": "283748239349283",
                "receiptHandle.2": "283748239349284",
            },
            "GETcmq-queue-gz.api.qcloud.com/v2/index.php?Action=BatchDeleteMessage&Nonce=42"
            "&RequestClient=SDK_Python_1.3&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
            "&SignatureMethod=HmacSHA1&Timestamp=1465185768&Token=tmpToken123"
            "&queueName=mps-notify&receiptHandle.1=283748239349283&receiptHandle.2=283748239349284",
            "O0oT8V96ogy9/9jHfIZWaYngq0M=",
            id="3-batch-delete-get-sha1-with-token",
        ),
        pytest.param(
            "POST",
            LEGACY,
            {
                **_common(7),
                "Action": "SendMessage",
                "delaySeconds": 0,
                "msgBody": _NOTE,
                "queueName": "mps-notify",
            },
            "POSTcmq-queue-gz.api.qcloud.com/v2/index.php?Action=SendMessage&Nonce=7"
            "&RequestClient=SDK_Python_1.3&SecretId=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE"
            f"&SignatureMethod=HmacSHA1&Timestamp=1465185768&delaySeconds=0&msgBody={_NOTE}"
            "&queueName=mps-notify",
            "MQKhlxBMhN8y+ds2I13PaXIKY0Y=",
            id="4-send-raw-special-characters",
        ),
    ],
)
def test_vectors_1_to_4(
    method: str, host: str, params: dict[str, object], text: str, signature: str
) -> None:
    """The protocol notes' worked examples 1-4: the whole string to sign, and its signature."""
    assert string_to_sign(method, host, DEFAULT_PATH, params) == text
    assert sign(SK, text, str(params["SignatureMethod"])) == signature


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("cmq-queue-gz.api.tencentyun.com", "C16WEtEXsD5v5tnaUMLAbZewXhI="),
        ("cmq-queue-gz.api.qcloud.com", "vP77LRtpQLBC7zbVONbnpwRrVsg="),
    ],
)
def test_vector_5_documentation_example(host: str, expected: str) -> None:
    params = {
        "Action": "SendMessage",
        "Nonce": 2889712707386595659,
        "RequestClient": "SDK_Python_1.3",
        "SecretId": "AKIDPcYDclDJCn8D0Xypa4f3pKYUCVYLn3zT",
        "SignatureMethod": "HmacSHA1",
        "Timestamp": 1534154812,
        "clientRequestId": 1231231231,
        "delaySeconds": 0,
        "msgBody": "msg",
        "queueName": "test1",
    }
    text = string_to_sign("POST", host, DEFAULT_PATH, params)
    assert sign("pPgfLipfEXZ7VcRzhAMIyPaU7UbQyFFx", text, "HmacSHA1") == expected


def test_signature_is_left_out_and_names_sorted_before_underscore_swap() -> None:
    params = {"b_x": "1", "a": "2", "Signature": "ignored", "receiptHandle.10": "x"}
    params["receiptHandle.2"] = "y"
    text = string_to_sign("post", "h", "/p", params)
    assert text == "POSTh/p?a=2&b.x=1&receiptHandle.10=x&receiptHandle.2=y"


def test_unknown_signature_method_means_sha1() -> None:
    assert sign(SK, "text", "md5") == sign(SK, "text", "HmacSHA1")
    assert sign(SK, "text", "HmacSHA256") != sign(SK, "text", "HmacSHA1")


def test_verify_rejects_other_keys_and_texts() -> None:
    good = sign(SK, "POSTh/p?a=1", "HmacSHA256")
    assert verify(SK, "POSTh/p?a=1", "HmacSHA256", good)
    assert not verify("other", "POSTh/p?a=1", "HmacSHA256", good)
    assert not verify(SK, "POSTh/p?a=2", "HmacSHA256", good)
    assert not verify(SK, "POSTh/p?a=1", "HmacSHA1", good)


def test_python_sdk_at_quirk_is_available_for_post_only() -> None:
    params = {"a": "@file", "b": "1"}
    assert string_to_sign("POST", "h", "/p", params, skip_at_values=True) == "POSTh/p?b=1"
    assert string_to_sign("GET", "h", "/p", params, skip_at_values=True) == "GETh/p?a=@file&b=1"
    assert string_to_sign("POST", "h", "/p", params) == "POSTh/p?a=@file&b=1"


_names = st.text(alphabet=string.ascii_letters + string.digits + "._", min_size=1, max_size=12)
_values = st.one_of(st.integers(min_value=0, max_value=2**63), st.text(min_size=1, max_size=40))


@given(
    params=st.dictionaries(_names, _values, min_size=1, max_size=8),
    http_method=st.sampled_from(["GET", "POST"]),
    sha=st.sampled_from([("sha1", "HmacSHA1"), ("sha256", "HmacSHA256")]),
    with_token=st.booleans(),
)
def test_matches_the_official_sdk_for_any_parameters(
    params: dict[str, object], http_method: str, sha: tuple[str, str], with_token: bool
) -> None:
    params.pop("Signature", None)
    if with_token:
        params["Token"] = "tmp-session-token"
    sdk_method, method = sha
    expected = Sign(SID, SK).make(TDMQ, DEFAULT_PATH, params, http_method, sdk_method).decode()
    text = string_to_sign(http_method, TDMQ, DEFAULT_PATH, params, skip_at_values=True)
    assert sign(SK, text, method) == expected
