"""The manifests source: a directory of multi-document YAML, watched for changes.

Each poll compares the directory's listing (names, sizes, mtimes) with the last
one and rereads only the files that changed, so one edited Service among tens of
thousands costs its own file's parse. `.json` files are read with the JSON
parser (a tenth of YAML's cost for the same objects). A file that fails to parse keeps the
objects it last yielded, so a half-saved edit does not delete running pods; an
invalid object is skipped. Both are reported with the file and document.

With `watch`, inotify (through watchdog) wakes the agent as soon as a file in
the directory changes, so a change takes effect in milliseconds while the agent
sleeps between polls; the poll alone still finds every change where inotify
cannot be had, only later.

A directory maintained by a program (the lab) may hold a `.generation` file
with a counter that the program bumps after every change; it is read before the
manifests, so "synced generation N" means every change up to N was seen.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml
from watchdog import events as fs_events
from watchdog.observers import Observer

from .events import Event, diff
from .objects import ManifestError, ObjectKey, validate

log = logging.getLogger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")
GENERATION_FILE = ".generation"
# what makes the directory worth another look; opening and reading files, as a
# poll itself does, does not
CHANGES = {fs_events.EVENT_TYPE_CREATED, fs_events.EVENT_TYPE_DELETED, fs_events.EVENT_TYPE_MODIFIED,
           fs_events.EVENT_TYPE_MOVED, fs_events.EVENT_TYPE_CLOSED, fs_events.EVENT_TYPE_EVENTS_LOST}
# libyaml's parser where PyYAML was built with it: several times faster
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_documents(text: str, origin: str) -> list:
    if origin.endswith(".json"):
        try:
            return [json.loads(text)]
        except ValueError as exc:
            raise ManifestError(origin, f"not valid JSON: {exc}") from None
    try:
        return list(yaml.load_all(text, Loader=YAML_LOADER))
    except yaml.YAMLError as exc:
        raise ManifestError(origin, f"not valid YAML: {exc}") from None


def parse_text(text: str, origin: str) -> tuple[dict[ObjectKey, dict], list[str]]:
    """Every valid object of one multi-document YAML text (or a JSON one, by the
    origin's suffix), and an error per bad one.

    Raises ManifestError when the text does not parse at all.
    """
    docs = load_documents(text, origin)
    objects: dict[ObjectKey, dict] = {}
    errors: list[str] = []
    for index, doc in enumerate(docs, start=1):
        if doc is None:  # an empty document between two ---
            continue
        where = f"{origin}, document {index}"
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items or []:
            try:
                key, obj = validate(item, where)
            except ManifestError as exc:
                errors.append(str(exc))
                continue
            if key in objects:
                errors.append(f"{where}: {key} is declared twice; the first one is used")
                continue
            objects[key] = obj
    return objects, errors


def parse_file(path: Path) -> tuple[dict[ObjectKey, dict], list[str]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(str(path), f"cannot read: {exc.strerror}") from None
    return parse_text(text, str(path))


@dataclass
class ManifestDir:
    path: Path
    _listing: tuple = field(default=(), init=False)
    _per_file: dict[str, dict[ObjectKey, dict]] = field(default_factory=dict, init=False)
    _file_errors: dict[str, list[str]] = field(default_factory=dict, init=False)
    _owner: dict[ObjectKey, str] = field(default_factory=dict, init=False)  # the file that declares each
    _cross_file_errors: list[str] = field(default_factory=list, init=False)
    _state: dict[ObjectKey, dict] = field(default_factory=dict, init=False)
    errors: list[str] = field(default_factory=list, init=False)
    generation: int = field(default=0, init=False)
    _on_change: Callable[[], None] | None = field(default=None, init=False)
    _observer: Observer | None = field(default=None, init=False)
    _watched: tuple = field(default=(), init=False)  # (st_dev, st_ino) of the directory watched

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call `on_change` (from another thread) whenever the directory changes."""
        self._on_change = on_change
        self._keep_watching()

    def _keep_watching(self) -> None:
        """Watch the directory that is at `path` now: one created or replaced since
        the last look gets a new watch."""
        if self._on_change is None:
            return
        try:
            st = os.stat(self.path)
            current = (st.st_dev, st.st_ino)
        except OSError:
            current = ()
        if current == self._watched:
            return
        self._stop_watching()
        if not current:
            return
        handler = fs_events.FileSystemEventHandler()
        handler.on_any_event = self._on_event
        observer = Observer()
        try:
            observer.schedule(handler, str(self.path))
            observer.start()
        except OSError as exc:  # out of inotify watches or instances: polling still finds changes
            log.warning("cannot watch %s (%s); changes are found by polling only", self.path, exc)
            observer = None  # not retried until the directory is replaced: one warning
        self._observer, self._watched = observer, current

    def _on_event(self, event) -> None:
        if event.src_path == str(self.path) and event.event_type in (fs_events.EVENT_TYPE_DELETED,
                                                                     fs_events.EVENT_TYPE_MOVED):
            # the watch went with the directory: forget it, so the next look watches the
            # directory then at `path` even if it reuses the old one's inode number
            self._watched = ()
        if event.event_type in CHANGES:
            self._on_change()

    def _stop_watching(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
        self._observer, self._watched = None, ()

    def close(self) -> None:
        self._stop_watching()
        self._on_change = None

    def _scan(self) -> tuple:
        entries = []
        try:
            with os.scandir(self.path) as it:
                for entry in it:
                    if entry.name.endswith(SUFFIXES) or entry.name == GENERATION_FILE:
                        st = entry.stat()
                        entries.append((entry.name, st.st_size, st.st_mtime_ns, st.st_ino))
        except FileNotFoundError:
            pass
        return tuple(sorted(entries))

    def _read_generation(self) -> int:
        try:
            return int((self.path / GENERATION_FILE).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _merge_all(self, per_file: dict[str, dict[ObjectKey, dict]]) -> list[Event]:
        state: dict[ObjectKey, dict] = {}
        owner: dict[ObjectKey, str] = {}
        self._cross_file_errors = []
        for name in sorted(per_file):
            for key, obj in per_file[name].items():
                if key in state:
                    self._cross_file_errors.append(
                        f"{self.path / name}: {key} is also declared in another file; ignored here")
                    continue
                state[key], owner[key] = obj, name
        events = diff(self._state, state)
        self._state, self._owner = state, owner
        return events

    def _merge_changed(self, per_file: dict[str, dict[ObjectKey, dict]], changed: set[str]) -> list[Event] | None:
        """The events of the changed files alone, or None when an object they declared
        (now or before) is declared in another file too."""
        if self._cross_file_errors:
            return None
        touched: set[ObjectKey] = set()
        for name in changed:
            touched.update(self._per_file.get(name, {}))
            touched.update(per_file.get(name, {}))
        if any(key in self._owner and self._owner[key] not in changed for key in touched):
            return None
        new: dict[ObjectKey, dict] = {}
        owner: dict[ObjectKey, str] = {}
        for name in sorted(changed & per_file.keys()):
            for key, obj in per_file[name].items():
                if key in new:
                    return None
                new[key], owner[key] = obj, name
        old = {key: self._state[key] for key in touched if key in self._state}
        for key in old:
            del self._state[key]
            del self._owner[key]
        self._state.update(new)
        self._owner.update(owner)
        return diff(old, new)

    def poll(self) -> list[Event] | None:
        """Events since the last poll, or None when the directory has not changed."""
        self._keep_watching()
        listing = self._scan()
        if listing == self._listing and self._listing:
            return None
        unchanged = set(self._listing) & set(listing)
        self._listing = listing
        generation = self._read_generation()
        errors: list[str] = []
        per_file: dict[str, dict[ObjectKey, dict]] = {}
        file_errors: dict[str, list[str]] = {}
        for entry in listing:
            name = entry[0]
            if name == GENERATION_FILE:
                continue
            if entry in unchanged and name in self._per_file:
                per_file[name], file_errors[name] = self._per_file[name], self._file_errors.get(name, [])
            else:
                try:
                    per_file[name], file_errors[name] = parse_file(self.path / name)
                except ManifestError as exc:
                    file_errors[name] = [f"{exc}; keeping what it held before"]
                    per_file[name] = self._per_file.get(name, {})
            errors.extend(file_errors[name])
        changed = {n for n in per_file if per_file[n] is not self._per_file.get(n)}
        changed |= self._per_file.keys() - per_file.keys()
        events = self._merge_changed(per_file, changed)
        if events is None:  # an object in two files: the first file's wins, as a full merge decides
            events = self._merge_all(per_file)
        errors.extend(self._cross_file_errors)
        for message in errors:
            if message not in self.errors:
                log.error("%s", message)
        self.errors = errors
        self._per_file, self._file_errors = per_file, file_errors
        self.generation = generation
        return events
