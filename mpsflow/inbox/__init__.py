"""Durable inboxes: what a receiver that must answer at once (HTTP) appends to, and the
pipeline consumes like a queue (see :mod:`mpsflow.inbox.base`)."""

from mpsflow.inbox.base import Inbox, InboxItem
from mpsflow.inbox.source import InboxSource
from mpsflow.inbox.sqlite import DEFAULT_MAX_ITEMS, SQLiteInbox

__all__ = ["DEFAULT_MAX_ITEMS", "Inbox", "InboxItem", "InboxSource", "SQLiteInbox"]
