"""Durable inboxes: what a receiver that must answer at once (HTTP) appends to, and the
pipeline consumes like a queue (see :mod:`mpsflow.inbox.base`)."""

from typing import TYPE_CHECKING, Any

from mpsflow.inbox.base import Inbox, InboxItem, LeasedInbox
from mpsflow.inbox.source import InboxSource
from mpsflow.inbox.sqlite import DEFAULT_MAX_ITEMS, SQLiteInbox

if TYPE_CHECKING:
    from mpsflow.inbox.cmq import CmqInbox

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "CmqInbox",
    "Inbox",
    "InboxItem",
    "InboxSource",
    "LeasedInbox",
    "SQLiteInbox",
]


def __getattr__(name: str) -> Any:
    """``CmqInbox`` on first use: the CMQ client is imported only by apps that use it."""
    if name == "CmqInbox":
        from mpsflow.inbox.cmq import CmqInbox

        return CmqInbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
