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
    """The events that turn state `old` into state `new`, in a stable order."""
    events = []
    for key in sorted(old.keys() - new.keys()):
        events.append(Event(EventType.DELETED, key, old[key]))
    for key in sorted(new.keys()):
        if key not in old:
            events.append(Event(EventType.ADDED, key, new[key]))
        elif old[key] != new[key]:
            events.append(Event(EventType.MODIFIED, key, new[key]))
    return events
