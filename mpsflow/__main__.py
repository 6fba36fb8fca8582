"""``python -m mpsflow``: the same command line as the ``mpsflow`` script."""

from __future__ import annotations

from mpsflow.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
