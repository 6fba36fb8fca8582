"""MPS notification signing: ``Sign = MD5(NotifyKey + Timestamp)``, its verifier, and the
delivery middleware that rejects what does not verify."""

from mpsflow.signing.middleware import SignatureMiddleware
from mpsflow.signing.verifier import SignatureVerifier, UnsignedPolicy, sign

__all__ = ["SignatureMiddleware", "SignatureVerifier", "UnsignedPolicy", "sign"]
