"""JSON columns: a dict or a list for one is written as its JSON text, as LanceDB's
``table.add()`` writes it (its ``_serialize_json_values``).

A JSON column is one of Arrow's ``arrow.json`` extension type (LanceDB's ``pa.json_()``, which
Lance stores as ``lance.json``), at the top level, inside a struct or as a list's items. A
string is taken as JSON text already (and refused if it is not JSON); a dict or a list becomes
its JSON text. A value JSON cannot hold (a datetime, bytes, NaN) rejects its record, naming the
field; ``add()`` fails on it too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

JSON_EXTENSIONS = ("arrow.json", "lance.json")


def is_json_type(data_type: pa.DataType) -> bool:
    return getattr(data_type, "extension_name", None) in JSON_EXTENSIONS


@dataclass(frozen=True)
class _Plan:
    """Where the JSON values are inside one column's values."""

    json: bool = False
    children: dict[str, _Plan] = field(default_factory=dict)
    item: _Plan | None = None


def _plan(data_type: pa.DataType) -> _Plan | None:
    if is_json_type(data_type):
        return _Plan(json=True)
    if pa.types.is_struct(data_type):
        children = {
            data_type.field(i).name: plan
            for i in range(data_type.num_fields)
            if (plan := _plan(data_type.field(i).type)) is not None
        }
        return _Plan(children=children) if children else None
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        item = _plan(data_type.value_type)
        return _Plan(item=item) if item is not None else None
    return None


class JsonColumns:
    """The JSON columns of one table schema."""

    def __init__(self, schema: pa.Schema) -> None:
        self._plans = {f.name: plan for f in schema if (plan := _plan(f.type)) is not None}

    def __bool__(self) -> bool:
        return bool(self._plans)

    def apply(self, rows: list[dict[str, Any]], rejected: dict[int, str]) -> None:
        """Replace, in ``rows`` (by copies), each dict or list bound for a JSON column by its
        JSON text; reject a record holding a value JSON cannot hold."""
        for index, row in enumerate(rows):
            if index in rejected:
                continue
            for name, plan in self._plans.items():
                if name not in row:
                    continue
                try:
                    value = _serialized(row[name], plan)
                except (TypeError, ValueError, RecursionError) as exc:
                    rejected[index] = f"field {name!r}: cannot be written as JSON: {exc}"
                    break
                if value is not row[name]:
                    row = rows[index] = {**row, name: value}


def _serialized(value: Any, plan: _Plan) -> Any:
    """``value`` with its JSON parts as JSON text (the same object if nothing changed)."""
    if value is None or isinstance(value, str):
        return value
    if plan.json:
        if isinstance(value, (dict, list)):
            return json.dumps(value, allow_nan=False)
        return value  # not JSON's kind: the type checks reject it
    if plan.children and isinstance(value, dict):
        changed = {
            key: new
            for key, child in plan.children.items()
            if key in value and (new := _serialized(value[key], child)) is not value[key]
        }
        return {**value, **changed} if changed else value
    if plan.item is not None and isinstance(value, list):
        items = [_serialized(item, plan.item) for item in value]
        same = all(new is old for new, old in zip(items, value, strict=True))
        return value if same else items
    return value


def json_text_problem(value: Any) -> str | None:
    """Why ``value`` cannot go into a JSON column as it is (a string of valid JSON), or None."""
    if not isinstance(value, str):
        return f"expected JSON text, a dict or a list, got {type(value).__name__}"
    try:
        json.loads(value, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        return f"not valid JSON: {exc}"
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
