"""Imports the native module's tables into pyarrow, without copying a buffer.

The native side builds each table as Arrow record batches with the schemas of
``d2d_model::columnar`` (the same the lake's curated zone is written with) and exports them
through the Arrow C stream interface (``__arrow_c_stream__``, the Arrow PyCapsule protocol).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def table(native: Any) -> pa.Table:
    """Builds a ``pyarrow.Table`` from a native ``ArrowTable`` (or any Arrow C stream)."""
    # `RecordBatchReader.from_stream` and `pa.table(native)` need pyarrow >= 15; this
    # classmethod is how pyarrow 14 (the oldest supported) imports a stream capsule.
    reader = pa.RecordBatchReader._import_from_c_capsule(native.__arrow_c_stream__())
    return reader.read_all()
