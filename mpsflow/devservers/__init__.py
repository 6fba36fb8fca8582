"""Local stand-ins for Tencent Cloud services, for development and tests: a CMQ-compatible
queue server (:mod:`mpsflow.devservers.cmq`, ``mpsflow cmq-server``) and an MPS API server
(:mod:`mpsflow.devservers.mps`, ``mpsflow mps-server``)."""

__all__: list[str] = []
