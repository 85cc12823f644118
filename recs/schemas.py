"""Loads the table schemas and feature spec from ``schemas/`` (the single source of truth).

Code never restates a schema: it asks this module for a ``StructType`` and selects/casts
to it before every write, so a drifting column is caught at the writer, not downstream.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

_SIMPLE = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "bigint": T.LongType(),
    "long": T.LongType(),
    "double": T.DoubleType(),
    "float": T.FloatType(),
    "boolean": T.BooleanType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
}


def parse_type(text: str) -> T.DataType:
    """Parse the small type language used in ``schemas/`` (Spark DDL names, arrays, maps)."""
    text = text.strip()
    if text in _SIMPLE:
        return _SIMPLE[text]
    m = re.fullmatch(r"array<(.+)>", text)
    if m:
        return T.ArrayType(parse_type(m.group(1)), containsNull=True)
    m = re.fullmatch(r"map<([a-z]+),(.+)>", text)
    if m:
        return T.MapType(parse_type(m.group(1)), parse_type(m.group(2)), valueContainsNull=True)
    raise ValueError(f"unknown type {text!r} in schemas/")


@cache
def load_json(relative: str) -> dict[str, Any]:
    """Read one JSON document from the schemas package, e.g. ``tables/events.json``."""
    node = resources.files("recs._schemas")
    for part in relative.split("/"):
        node = node.joinpath(part)
    return json.loads(node.read_text(encoding="utf-8"))


def table_doc(name: str) -> dict[str, Any]:
    return load_json(f"tables/{name}.json")


def raw_doc(name: str) -> dict[str, Any]:
    return load_json(f"raw/{name}.json")


def struct_of(doc: dict[str, Any]) -> T.StructType:
    return T.StructType(
        [
            T.StructField(c["name"], parse_type(c["type"]), nullable=c.get("nullable", True))
            for c in doc["columns"]
        ]
    )


def table_schema(name: str) -> T.StructType:
    return struct_of(table_doc(name))


def interaction_events() -> tuple[str, ...]:
    """Event types that show a user's interest in an item (not impressions, not ads): what the
    rollups count as touches, what co-visitation pairs, and what evaluation takes as relevant."""
    return tuple(raw_doc("events")["interactions"])


def raw_schema(name: str) -> T.StructType:
    return struct_of(raw_doc(name))


def partition_column(name: str) -> str | None:
    return table_doc(name).get("partition_by")


def conform(df: DataFrame, name: str) -> DataFrame:
    """Select and cast ``df`` to table ``name``'s schema, failing loudly on a missing column."""
    schema = table_schema(name)
    missing = [f.name for f in schema.fields if f.name not in df.columns]
    if missing:
        raise ValueError(f"table {name!r}: DataFrame lacks columns {missing}")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
