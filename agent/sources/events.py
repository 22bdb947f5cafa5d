"""The events every source produces, whatever it reads (a directory, the API)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .objects import ObjectKey


class EventType(str, Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True)
class Event:
    type: EventType
    key: ObjectKey
    obj: dict  # for DELETED, the last state seen


def diff(old: dict[ObjectKey, dict], new: dict[ObjectKey, dict]) -> list[Event]:
    """The events that turn state `old` into state `new`, in a stable order.

    Objects carried over unchanged are the same Python objects, so an identity
    check skips comparing them, and only changed keys are sorted: one change
    among 60,000 objects costs a pass over the keys, not a sort and deep compare."""
    events = []
    for key in sorted(old.keys() - new.keys()):
        events.append(Event(EventType.DELETED, key, old[key]))
    changed = [key for key, obj in new.items()
               if key not in old or (old[key] is not obj and old[key] != obj)]
    for key in sorted(changed):
        events.append(Event(EventType.ADDED if key not in old else EventType.MODIFIED, key, new[key]))
    return events
