"""Tencent Cloud API plumbing: TC3-HMAC-SHA256 signing (:mod:`~mpsflow.tencentcloud.tc3`) and
the TDMQ-CMQ client (:mod:`mpsflow.tencentcloud.cmq`)."""

__all__: list[str] = []
