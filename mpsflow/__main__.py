"""``python -m mpsflow`` and the ``mpsflow`` script: the command line of :mod:`mpsflow.cli`."""

from __future__ import annotations

__all__ = ["main"]


def main() -> int:
    """Run the command line; a Ctrl-C while it is still being imported exits 130, quietly.

    :func:`mpsflow.cli.main` handles Ctrl-C from then on (the commands, the app's import).
    """
    try:
        from mpsflow.cli import main as cli_main
    except KeyboardInterrupt:
        return 130
    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
