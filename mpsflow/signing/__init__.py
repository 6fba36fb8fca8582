"""MPS notification signing: ``Sign = MD5(str(Timestamp) + NotifyKey)``, its verifier, the
signer (:func:`sign_notification`), and the delivery middleware that rejects what does not
verify."""

from mpsflow.signing.middleware import SignatureMiddleware
from mpsflow.signing.verifier import SignatureVerifier, UnsignedPolicy, sign, sign_notification

__all__ = [
    "SignatureMiddleware",
    "SignatureVerifier",
    "UnsignedPolicy",
    "sign",
    "sign_notification",
]
