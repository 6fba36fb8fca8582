"""``python -m mpsflow.devservers.cmq``: run the local CMQ server (as ``mpsflow cmq-server``)."""

from __future__ import annotations

import sys

from mpsflow.devservers.cmq.command import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
