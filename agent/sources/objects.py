"""Kubernetes objects as the sources read them: validation and identity.

Objects stay plain dicts (as the API serves them); this module only decides
whether one is usable and names it in errors the way an operator would.
"""
from __future__ import annotations

from typing import Any, NamedTuple

NAMESPACED_KINDS = {"Pod", "Deployment", "Service", "NetworkPolicy", "EndpointSlice"}
CLUSTER_KINDS = {"Namespace", "Node"}
KINDS = NAMESPACED_KINDS | CLUSTER_KINDS


class ObjectKey(NamedTuple):
    """A NamedTuple, not a dataclass: keys are hashed and compared by the
    hundred thousand on every poll, and a tuple does that in C."""
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str

    def __str__(self) -> str:
        path = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {path}"


class ManifestError(ValueError):
    """An object (or a whole document) that cannot be used, and why."""

    def __init__(self, origin: str, message: str):
        self.origin = origin
        super().__init__(f"{origin}: {message}")


def _describe(doc: dict) -> str:
    kind = doc.get("kind") or "object"
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name")
    ns = meta.get("namespace")
    who = f"{ns}/{name}" if ns and name else (name or "without a name")
    return f"{kind} {who}"


def validate(doc: Any, origin: str) -> tuple[ObjectKey, dict]:
    """Check one decoded document; return its key and the object with defaults set.

    `origin` says where it came from ("demo.yaml, document 2") for error messages.
    """
    if not isinstance(doc, dict):
        raise ManifestError(origin, f"expected a mapping (an object), got {type(doc).__name__}")
    kind = doc.get("kind")
    if not kind:
        raise ManifestError(origin, "the object has no kind")
    if kind not in KINDS:
        raise ManifestError(
            origin, f"{_describe(doc)}: unknown kind {kind!r} (Weft reads {', '.join(sorted(KINDS))})"
        )
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise ManifestError(origin, f"{_describe(doc)}: metadata.name is missing")
    name = meta["name"]
    if not isinstance(name, str) or "/" in name:
        raise ManifestError(origin, f"{_describe(doc)}: metadata.name {name!r} is not a valid name")
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is not None and not (
            isinstance(value, dict) and all(isinstance(k, str) for k in value)
        ):
            raise ManifestError(origin, f"{_describe(doc)}: metadata.{field} must map strings to strings")
    if kind in NAMESPACED_KINDS:
        namespace = meta.get("namespace") or "default"
        doc = {**doc, "metadata": {**meta, "namespace": namespace}}
    else:
        namespace = ""
    if "spec" in doc and doc["spec"] is not None and not isinstance(doc["spec"], dict):
        raise ManifestError(origin, f"{_describe(doc)}: spec must be a mapping")
    return ObjectKey(kind, namespace, name), doc
