"""Kubernetes label selectors (matchLabels and matchExpressions), parsed once.

A selector is checked when a policy is read, so a malformed one is reported
with the policy's name instead of failing every packet decision later.
"""
from __future__ import annotations

from dataclasses import dataclass

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True)
class Selector:
    """An empty selector (no labels, no expressions) selects everything."""

    labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        for key, value in self.labels:
            if labels.get(key) != value:
                return False
        return all(r.matches(labels) for r in self.expressions)


EVERYTHING = Selector()


def parse_selector(spec, where: str) -> Selector:
    """A LabelSelector as the API defines it; `where` names it in errors."""
    if spec is None:
        return EVERYTHING
    if not isinstance(spec, dict):
        raise SelectorError(f"{where}: a label selector must be a mapping")
    unknown = set(spec) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise SelectorError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    match_labels = spec.get("matchLabels") or {}
    if not isinstance(match_labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in match_labels.items()):
        raise SelectorError(f"{where}.matchLabels must map strings to strings")
    requirements = []
    for i, expr in enumerate(spec.get("matchExpressions") or []):
        at = f"{where}.matchExpressions[{i}]"
        if not isinstance(expr, dict) or not isinstance(expr.get("key"), str):
            raise SelectorError(f"{at}: needs a key")
        op, values = expr.get("operator"), expr.get("values") or []
        if op not in OPERATORS:
            raise SelectorError(f"{at}: operator {op!r} is not one of {', '.join(OPERATORS)}")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise SelectorError(f"{at}: values must be a list of strings")
        if op in ("In", "NotIn") and not values:
            raise SelectorError(f"{at}: operator {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and values:
            raise SelectorError(f"{at}: operator {op} takes no values")
        requirements.append(Requirement(expr["key"], op, frozenset(values)))
    return Selector(tuple(sorted(match_labels.items())), tuple(requirements))
