"""Payload filters: one definition, mapped to SQLite (FAISS store) and to Qdrant.

A filter is a dict of conditions that must all hold::

    {"kind": "pdf",                       # equality (str, int, float, bool)
     "page": {"gte": 2, "lte": 5},        # range: any of gt / gte / lt / lte
     "lang": {"any": ["en", "de"]}}       # any-of

A payload field that holds a list matches when any of its elements matches, as in Qdrant.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias, cast

from omniret.errors import FilterError
from omniret.types import JSON

if TYPE_CHECKING:
    from qdrant_client import models

#: a filter as callers write it: a JSON object of conditions (see the module docstring)
Filter: TypeAlias = Mapping[str, JSON]
#: a value a condition compares against
Scalar: TypeAlias = str | int | float | bool
RangeOp: TypeAlias = Literal["gt", "gte", "lt", "lte"]

RANGE_OPS: tuple[RangeOp, ...] = ("gt", "gte", "lt", "lte")
_SQL_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


@dataclass(frozen=True)
class Condition:
    """One validated condition on payload field ``key``; exactly one of its comparisons is set.

    ``op`` is ``eq`` (then ``value``), ``any`` (then ``values``, non-empty) or ``range`` (then ``bounds``,
    op -> bound).
    """

    key: str
    op: Literal["eq", "any", "range"]
    value: Scalar = ""
    values: tuple[Scalar, ...] = ()
    bounds: Mapping[RangeOp, float] | None = None

    def options(self) -> tuple[Scalar, ...]:
        """The values an ``eq`` or ``any`` condition accepts."""
        return (self.value,) if self.op == "eq" else self.values


def _scalar(key: str, v: object) -> Scalar:
    if isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v)):
        return v
    raise FilterError(f"filter {key!r}: values must be str, int, float or bool, got {v!r}")


def parse_filter(flt: Filter | None) -> list[Condition]:
    """Validate a filter dict into conditions; raises ``ConfigError`` naming the bad key."""
    if flt is None:
        return []
    given = cast(object, flt)  # a request's JSON: checked, not trusted
    if not isinstance(given, dict):
        raise FilterError(f"a filter is a dict of conditions, got {type(given).__name__}")
    out: list[Condition] = []
    for key, spec in cast("dict[object, object]", given).items():
        if not isinstance(key, str) or not key:
            raise FilterError(f"filter keys are non-empty strings, got {key!r}")
        if isinstance(spec, dict):
            spec = cast("dict[object, object]", spec)
            ops = set(spec)
            if ops == {"any"}:
                vals = spec["any"]
                if not isinstance(vals, (list, tuple)) or not vals:
                    raise FilterError(f"filter {key!r}: 'any' takes a non-empty list, got {vals!r}")
                out.append(Condition(key, "any", values=tuple(_scalar(key, v) for v in cast("Sequence[object]", vals))))
            elif ops and ops <= set(RANGE_OPS):
                bounds: dict[RangeOp, float] = {}
                for op in RANGE_OPS:
                    if op in spec:
                        b = spec[op]
                        if isinstance(b, bool) or not isinstance(b, (int, float)):
                            raise FilterError(f"filter {key!r}: {op} takes a number, got {b!r}")
                        bounds[op] = b
                out.append(Condition(key, "range", bounds=bounds))
            elif ops == {"eq"}:
                out.append(Condition(key, "eq", value=_scalar(key, spec["eq"])))
            else:
                raise FilterError(f"filter {key!r}: unknown operator(s) {sorted(map(str, ops))}; use eq, any, "
                                  f"or a range of {', '.join(RANGE_OPS)}")
        elif isinstance(spec, (list, tuple)):
            raise FilterError(f"filter {key!r}: for any-of write {{'any': {list(cast('Sequence[object]', spec))!r}}}")
        else:
            out.append(Condition(key, "eq", value=_scalar(key, spec)))
    return out


def matches(payload: Mapping[str, object], conds: list[Condition]) -> bool:
    """Whether a payload satisfies every condition (the reference semantics both stores follow)."""
    for c in conds:
        v = payload.get(c.key)
        values = cast("list[object]", v) if isinstance(v, list) else [v]
        if not any(_match_one(x, c) for x in values if x is not None):
            return False
    return True


def _same(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _match_one(x: object, c: Condition) -> bool:
    if c.bounds is None:
        return any(_same(x, v) for v in c.options())
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    return all({"gt": x > b, "gte": x >= b, "lt": x < b, "lte": x <= b}[op] for op, b in c.bounds.items())


def _json_path(key: str) -> str:
    return "$." + json.dumps(key)


def to_sql(conds: list[Condition], column: str = "payload") -> tuple[str, list[Scalar]]:
    """A SQLite ``WHERE`` clause (and its parameters) over a JSON payload column."""
    if not conds:
        return "1", []
    parts: list[str] = []
    params: list[Scalar] = []
    for c in conds:
        each = f"SELECT 1 FROM json_each({column}, ?) AS je WHERE "
        params.append(_json_path(c.key))
        if c.bounds is not None:
            cmp = " AND ".join(f"je.value {_SQL_OPS[op]} ?" for op in c.bounds)
            parts.append(f"EXISTS({each}je.type IN ('integer', 'real') AND {cmp})")
            params.extend(c.bounds.values())
        else:
            ors: list[str] = []
            for v in c.options():
                if isinstance(v, bool):
                    ors.append(f"je.type = '{'true' if v else 'false'}'")
                elif isinstance(v, str):
                    ors.append("(je.type = 'text' AND je.value = ?)")
                    params.append(v)
                else:
                    ors.append("(je.type IN ('integer', 'real') AND je.value = ?)")
                    params.append(v)
            parts.append(f"EXISTS({each}({' OR '.join(ors)}))")
    return " AND ".join(parts), params


def to_qdrant(conds: list[Condition]) -> models.Filter | None:
    """The equivalent ``qdrant_client.models.Filter`` (None for no conditions)."""
    if not conds:
        return None
    from qdrant_client import models

    must: list[models.Condition] = []
    for c in conds:
        if c.bounds is not None:
            must.append(models.FieldCondition(key=c.key, range=models.Range(**c.bounds)))
            continue
        values = c.options()
        # Qdrant's match takes str/int/bool; a float is matched as a one-point range.
        exact = [v for v in values if not isinstance(v, float)]
        floats = [v for v in values if isinstance(v, float)]
        should: list[models.Condition] = []
        if len(exact) == 1:
            should.append(models.FieldCondition(key=c.key, match=models.MatchValue(value=exact[0])))
        elif exact:
            strs = [v for v in exact if isinstance(v, str)]
            ints = [v for v in exact if isinstance(v, int) and not isinstance(v, bool)]
            bools = [v for v in exact if isinstance(v, bool)]
            for group in (strs, ints):
                if group:
                    should.append(models.FieldCondition(key=c.key, match=models.MatchAny(any=group)))
            should.extend(models.FieldCondition(key=c.key, match=models.MatchValue(value=b)) for b in bools)
        should.extend(models.FieldCondition(key=c.key, range=models.Range(gte=f, lte=f)) for f in floats)
        must.append(should[0] if len(should) == 1 else models.Filter(should=should))
    return models.Filter(must=must)


def parse_filter_args(args: list[str] | None) -> dict[str, JSON]:
    """CLI ``--filter`` strings to a filter: ``key=v``, ``key=v1,v2`` (any-of), ``key>=n``, ``key<n`` ...

    Values are read as JSON when they parse (numbers, true/false), else as strings.
    """
    flt: dict[str, JSON] = {}
    for raw in args or []:
        for sym, op in ((">=", "gte"), ("<=", "lte"), (">", "gt"), ("<", "lt"), ("=", None)):
            if sym in raw:
                key, _, val = raw.partition(sym)
                key = key.strip()
                if not key or not val:
                    raise FilterError(f"--filter {raw!r}: write key=value, key=v1,v2, key>=n or key<n")
                if op is None:
                    vals: list[JSON] = [_cli_value(v) for v in val.split(",")]
                    flt[key] = vals[0] if len(vals) == 1 else {"any": vals}
                else:
                    num = _cli_value(val)
                    if isinstance(num, bool) or not isinstance(num, (int, float)):
                        raise FilterError(f"--filter {raw!r}: {sym} takes a number")
                    prior = flt.get(key)
                    existing = prior if isinstance(prior, dict) else {}
                    flt[key] = {**existing, op: num}
                break
        else:
            raise FilterError(f"--filter {raw!r}: write key=value, key=v1,v2, key>=n or key<n")
    return flt


def _cli_value(s: str) -> Scalar:
    s = s.strip()
    try:
        v = json.loads(s)
    except ValueError:
        return s
    return v if isinstance(v, (int, float, bool, str)) else s
