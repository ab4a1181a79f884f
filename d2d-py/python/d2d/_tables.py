"""Wraps the native module's column buffers into pyarrow tables, without touching a row.

The native side hands over each column as flat buffers in Arrow's own layout (see
``d2d-py/src/columns.rs``); ``pyarrow.Array.from_buffers`` adopts them as they are.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

#: Timestamps are UTC, microseconds since the epoch (the feed writes milliseconds).
TIMESTAMP = pa.timestamp("us", tz="UTC")

_FIXED = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "timestamp": TIMESTAMP,
}

_VARLEN = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "large_binary": pa.large_binary(),
}


def _buffer(data: bytes | None) -> pa.Buffer | None:
    return None if data is None else pa.py_buffer(data)


def _array(rows: int, spec: tuple[Any, ...]) -> pa.Array:
    kind = spec[0]
    if kind == "dictionary":
        _, indices, values = spec
        index = pa.Array.from_buffers(pa.int32(), rows, [None, pa.py_buffer(indices)])
        return pa.DictionaryArray.from_arrays(index, pa.array(values, pa.string()))
    if kind in _FIXED:
        _, values, validity, nulls = spec
        return pa.Array.from_buffers(
            _FIXED[kind], rows, [_buffer(validity), pa.py_buffer(values)], null_count=nulls
        )
    if kind in _VARLEN:
        _, offsets, data, validity, nulls = spec
        return pa.Array.from_buffers(
            _VARLEN[kind],
            rows,
            [_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)],
            null_count=nulls,
        )
    raise AssertionError(f"unknown column kind from the native module: {kind!r}")


def table(native: tuple[int, list[tuple[str, tuple[Any, ...]]]]) -> pa.Table:
    """Builds a ``pyarrow.Table`` from ``(rows, [(name, column), ...])``."""
    rows, columns = native
    arrays = [_array(rows, spec) for _, spec in columns]
    return pa.Table.from_arrays(arrays, names=[name for name, _ in columns])
