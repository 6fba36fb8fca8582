"""Local stand-ins for Tencent Cloud services, for development and tests: a CMQ-compatible
queue server (:mod:`mpsflow.devservers.cmq`, ``mpsflow cmq-server``)."""

__all__: list[str] = []
