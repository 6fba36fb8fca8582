"""``python -m mpsflow.devservers.mps``: run the local MPS server (as ``mpsflow mps-server``)."""

from __future__ import annotations

import sys

from mpsflow.devservers.mps.command import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
