from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from agent.sources.events import EventType
from agent.sources.manifests import GENERATION_FILE, ManifestDir, parse_text
from agent.sources.objects import ManifestError, ObjectKey

POD = """
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: x, labels: {app: %s}}
spec: {nodeName: n1}
status: {podIP: 10.244.1.%d, phase: Running}
"""


def test_multi_document_yaml_with_defaults():
    objects, errors = parse_text(
        "kind: Namespace\nmetadata: {name: x}\n---\n---\nkind: Service\nmetadata: {name: s}\n", "f.yaml")
    assert errors == []
    assert set(objects) == {ObjectKey("Namespace", "", "x"), ObjectKey("Service", "default", "s")}
    assert objects[ObjectKey("Service", "default", "s")]["metadata"]["namespace"] == "default"


@pytest.mark.parametrize("doc,message", [
    ("kind: Pod\nmetadata: {namespace: x}", "f.yaml, document 1: Pod without a name: metadata.name is missing"),
    ("kind: Gadget\nmetadata: {name: g}", "unknown kind 'Gadget'"),
    ("metadata: {name: g}", "the object has no kind"),
    ("- just\n- a list", "expected a mapping"),
    ("kind: Pod\nmetadata: {name: p, labels: [a]}", "metadata.labels must map strings to strings"),
    ("kind: Pod\nmetadata: {name: p}\nspec: 3", "spec must be a mapping"),
])
def test_invalid_objects_are_named_and_skipped(doc, message):
    objects, errors = parse_text(doc + "\n---\nkind: Namespace\nmetadata: {name: ok}\n", "f.yaml")
    assert list(objects) == [ObjectKey("Namespace", "", "ok")]
    assert len(errors) == 1 and message in errors[0]


def test_not_yaml_names_the_file():
    with pytest.raises(ManifestError, match=r"^bad.yaml: not valid YAML"):
        parse_text("kind: Pod\nmetadata: {name: [\n", "bad.yaml")


def test_duplicate_object_in_one_file_keeps_the_first():
    objects, errors = parse_text("kind: Namespace\nmetadata: {name: x, labels: {v: '1'}}\n---\n"
                                 "kind: Namespace\nmetadata: {name: x, labels: {v: '2'}}\n", "f.yaml")
    assert objects[ObjectKey("Namespace", "", "x")]["metadata"]["labels"] == {"v": "1"}
    assert "declared twice" in errors[0]


def _touch_later(path, text):
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def test_directory_events_added_modified_deleted(tmp_path):
    source = ManifestDir(tmp_path)
    (tmp_path / "a.yaml").write_text(POD % ("a", "a", 2))
    events = source.poll()
    assert [(e.type, e.key.name) for e in events] == [(EventType.ADDED, "a")]
    assert source.poll() is None, "an unchanged directory is not reread"

    _touch_later(tmp_path / "a.yaml", POD % ("a", "a2", 2))
    events = source.poll()
    assert [(e.type, e.obj["metadata"]["labels"]["app"]) for e in events] == [(EventType.MODIFIED, "a2")]

    (tmp_path / "b.yml").write_text(POD % ("b", "b", 3))
    (tmp_path / "a.yaml").unlink()
    (tmp_path / "notes.txt").write_text("not a manifest")
    events = source.poll()
    assert sorted((e.type.value, e.key.name) for e in events) == [("ADDED", "b"), ("DELETED", "a")]


def test_broken_file_keeps_its_last_objects_and_reports(tmp_path):
    source = ManifestDir(tmp_path)
    (tmp_path / "a.yaml").write_text(POD % ("a", "a", 2))
    source.poll()
    _touch_later(tmp_path / "a.yaml", "kind: Pod\nmetadata: {name: [\n")
    events = source.poll()
    assert events == [], "a half-saved file must not delete its pods"
    assert len(source.errors) == 1 and "a.yaml: not valid YAML" in source.errors[0]
    assert "keeping what it held before" in source.errors[0]
    _touch_later(tmp_path / "a.yaml", POD % ("a", "fixed", 2))
    events = source.poll()
    assert [e.type for e in events] == [EventType.MODIFIED] and source.errors == []


def test_same_object_in_two_files_first_file_wins(tmp_path):
    (tmp_path / "1.yaml").write_text(POD % ("a", "one", 2))
    (tmp_path / "2.yaml").write_text(POD % ("a", "two", 2))
    source = ManifestDir(tmp_path)
    events = source.poll()
    assert [e.obj["metadata"]["labels"]["app"] for e in events] == ["one"]
    assert "also declared in another file" in source.errors[0]


def test_generation_is_read_with_the_manifests(tmp_path):
    source = ManifestDir(tmp_path)
    (tmp_path / "a.yaml").write_text(POD % ("a", "a", 2))
    (tmp_path / GENERATION_FILE).write_text("7")
    source.poll()
    assert source.generation == 7


def test_missing_directory_is_empty_not_fatal(tmp_path):
    source = ManifestDir(tmp_path / "absent")
    assert source.poll() == []


def test_only_changed_files_are_reread(tmp_path, monkeypatch):
    from agent.sources import manifests

    for i in range(3):
        (tmp_path / f"{i}.yaml").write_text(POD % (f"p{i}", "a", i + 2))
    source = ManifestDir(tmp_path)
    source.poll()
    read = []
    real = manifests.parse_file
    monkeypatch.setattr(manifests, "parse_file", lambda path: read.append(path.name) or real(path))
    _touch_later(tmp_path / "1.yaml", POD % ("p1", "changed", 3))
    events = source.poll()
    assert read == ["1.yaml"], "the other files' objects are kept from the last read"
    assert [(e.type, e.key.name) for e in events] == [(EventType.MODIFIED, "p1")]


def test_json_manifests_are_read_and_their_errors_named(tmp_path):
    import json

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j", "namespace": "x"},
           "spec": {"nodeName": "n1"}, "status": {"podIP": "10.244.1.9"}}
    (tmp_path / "list.json").write_text(json.dumps({"kind": "List", "items": [pod]}))
    source = ManifestDir(tmp_path)
    assert [e.key.name for e in source.poll()] == ["j"]
    _touch_later(tmp_path / "list.json", '{"kind": "List", "items": [')
    assert source.poll() == [] and "list.json: not valid JSON" in source.errors[0]


def test_an_object_moving_between_files_and_a_conflict_resolved_are_seen(tmp_path):
    (tmp_path / "1.yaml").write_text(POD % ("a", "one", 2))
    source = ManifestDir(tmp_path)
    source.poll()
    # the pod moves to another file, changed: one MODIFIED, no DELETED + ADDED
    (tmp_path / "1.yaml").unlink()
    (tmp_path / "2.yaml").write_text(POD % ("a", "two", 2))
    assert [(e.type, e.obj["metadata"]["labels"]["app"]) for e in source.poll()] == [(EventType.MODIFIED, "two")]
    # a second file declares it too: the first file (in name order) keeps it
    (tmp_path / "3.yaml").write_text(POD % ("a", "three", 2))
    assert source.poll() == [] and "also declared in another file" in source.errors[0]
    (tmp_path / "2.yaml").unlink()
    assert [(e.type, e.obj["metadata"]["labels"]["app"]) for e in source.poll()] == [(EventType.MODIFIED, "three")]
    assert source.errors == []


def test_incremental_polls_agree_with_a_fresh_read(tmp_path):
    import random

    rng = random.Random(7)
    source = ManifestDir(tmp_path)
    seen: dict = {}
    for step in range(60):
        name = tmp_path / f"{rng.randrange(4)}.yaml"
        if rng.random() < 0.25 and name.exists():
            name.unlink()
        else:
            pods = rng.sample(range(6), rng.randrange(1, 4))
            _touch_later(name, "---\n".join(POD % (f"p{i}", f"v{step}", i + 2) for i in pods))
        for e in source.poll() or []:
            if e.type == EventType.DELETED:
                del seen[e.key]
            else:
                seen[e.key] = e.obj
        fresh = ManifestDir(tmp_path)
        expected = {e.key: e.obj for e in fresh.poll()}
        assert seen == expected, f"step {step}"
        assert sorted(source.errors) == sorted(fresh.errors)


class Wakes:
    """Counts the watcher's calls, as the agent's wakeup event would see them."""

    def __init__(self):
        self.event = threading.Event()

    def __call__(self):
        self.event.set()

    def after(self, action, timeout: float = 3.0) -> bool:
        self.event.clear()
        action()
        return self.event.wait(timeout)


def test_a_change_in_the_directory_wakes_the_agent_and_its_own_reads_do_not(tmp_path):
    source, wakes = ManifestDir(tmp_path), Wakes()
    try:
        source.watch(wakes)
        assert wakes.after(lambda: (tmp_path / "a.yaml").write_text(POD % ("a", "a", 1)))
        assert [e.key.name for e in source.poll()] == ["a"]
        time.sleep(0.2)  # the write's last notifications (modified, closed) arrive
        assert not wakes.after(lambda: ((tmp_path / "a.yaml").read_text(), source.poll()), timeout=0.5), \
            "reading the manifests is not a change"
        staged = tmp_path / ".b.tmp"
        staged.write_text(POD % ("b", "b", 2))
        assert wakes.after(lambda: staged.rename(tmp_path / "b.yaml")), "a file renamed into place"
        assert wakes.after(lambda: (tmp_path / "a.yaml").unlink())
        assert {(e.type, e.key.name) for e in source.poll()} == {(EventType.ADDED, "b"), (EventType.DELETED, "a")}
    finally:
        source.close()


def test_a_directory_created_or_replaced_later_is_watched_from_the_next_poll(tmp_path):
    path = tmp_path / "manifests"
    source, wakes = ManifestDir(path), Wakes()
    threads_before = set(threading.enumerate())
    try:
        source.watch(wakes)
        assert source.poll() == []
        path.mkdir()
        source.poll()
        assert wakes.after(lambda: (path / "a.yaml").write_text(POD % ("a", "a", 1)))
        shutil.rmtree(path)
        path.mkdir()  # on most filesystems with the inode number the removed one had
        time.sleep(0.2)  # the removal's notifications arrive: only the new write may wake it below
        source.poll()
        assert wakes.after(lambda: (path / "b.yaml").write_text(POD % ("b", "b", 2)))
        assert [e.key.name for e in source.poll()] == ["b"]
    finally:
        source.close()
    assert not [t for t in set(threading.enumerate()) - threads_before if t.is_alive()], "close stops the watcher"
