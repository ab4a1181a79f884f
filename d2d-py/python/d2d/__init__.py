"""door2door fleet events for analysts, parsed by the same Rust code the d2d pipeline runs.

Every function takes ``paths_or_bytes``: a path (``str`` or ``os.PathLike``) to an NDJSON file
or to a folder (walked recursively, files read in landing order: by the time in their
``YYYY-MM-DD-H-M-S-events.*`` names, numerically, then by path), raw NDJSON ``bytes``, or a list
or tuple of these (kept in the given order). A single ``bytes`` argument is named ``"<bytes>"``
in ``source`` columns, the i-th item of a list ``"<bytes[i]>"``; files are named by their path.

Lines that are not valid events are never dropped silently: they are *rejects*, reported with
source, line, a stable ``code`` and a ``reason`` naming the field. Events equal to an earlier
one (within or across sources) are kept once and counted as ``duplicates``.

>>> import d2d
>>> day = d2d.read_events("testdata/landing")              # doctest: +SKIP
>>> day.events.to_pandas().groupby("kind").size()         # doctest: +SKIP
>>> d2d.data_check("testdata/landing")["rejects"]         # doctest: +SKIP
>>> d2d.distances("testdata/landing").metres.describe()   # doctest: +SKIP

Errors: a path that cannot be read raises the standard ``OSError`` subclass
(``FileNotFoundError``, ...); ``parse_line`` and ``read_events(strict=True)`` raise
:class:`ParseError` (a :class:`D2dError` and a ``ValueError``) carrying ``source``, ``line``,
``reason``, ``code``, ``field`` and ``raw``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Union

import pyarrow as pa

from . import _d2d, _tables
from ._d2d import D2dError, Event, Location, ParseError, Period, parse_line

if TYPE_CHECKING:
    # Imported when a frame is made, so that `import d2d` stays fast.
    import pandas as pd

__all__ = [
    "D2dError",
    "Event",
    "Location",
    "ParseError",
    "Period",
    "Profile",
    "ReadResult",
    "Table",
    "data_check",
    "distances",
    "parse_line",
    "read_events",
]

__version__: str = _d2d.__version__

_Input = Union[str, "os.PathLike[str]", bytes, bytearray]
#: What every function accepts: a path, NDJSON bytes, or a list or tuple of them.
PathsOrBytes = Union[_Input, "list[_Input]", "tuple[_Input, ...]"]


class Table:
    """A table of results, as a ``pyarrow.Table`` or a ``pandas.DataFrame``.

    Also exports itself through the Arrow PyCapsule interface (``__arrow_c_stream__``), so
    ``polars.from_arrow``, ``duckdb`` and others take it directly.
    """

    __slots__ = ("_table",)

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def to_arrow(self) -> pa.Table:
        """The table as a ``pyarrow.Table`` (no copy)."""
        return self._table

    def to_pandas(self, **kwargs: Any) -> pd.DataFrame:
        """The table as a ``pandas.DataFrame``.

        Dictionary columns become ``Categorical``, timestamps ``datetime64[us, UTC]``,
        coordinates ``float64`` (``NaN`` where absent). Keyword arguments go to
        ``pyarrow.Table.to_pandas`` (e.g. ``types_mapper=pd.ArrowDtype``); ``split_blocks``
        defaults to ``True``, which saves a copy of every column.
        """
        kwargs.setdefault("split_blocks", True)
        return self._table.to_pandas(**kwargs)

    @property
    def schema(self) -> pa.Schema:
        """Column names and Arrow types."""
        return self._table.schema

    @property
    def num_rows(self) -> int:
        """Number of rows."""
        return self._table.num_rows

    def __len__(self) -> int:
        return self._table.num_rows

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """Arrow PyCapsule stream export, delegated to pyarrow."""
        return self._table.__arrow_c_stream__(requested_schema)

    def __repr__(self) -> str:
        names = ", ".join(self._table.column_names)
        return f"Table({self._table.num_rows} rows: {names})"


class ReadResult:
    """What :func:`read_events` read.

    Attributes:
        events: one row per distinct valid event, in input order. Columns ``source``
            (dictionary), ``line`` (int64), ``kind`` (dictionary of ``vehicle.register``,
            ``vehicle.update``, ``vehicle.deregister``, ``operating_period.create``,
            ``operating_period.delete``), ``at`` (timestamp UTC), ``organization_id``
            (dictionary), ``vehicle_id`` (string), ``lat``, ``lng`` (float64),
            ``location_at`` (timestamp UTC), ``period_id`` (string), ``start``, ``finish``
            (timestamp UTC). Fields a kind does not have are null.
        rejects: one row per refused line, in input order. Columns ``source`` (dictionary),
            ``line`` (int64), ``code`` (dictionary, e.g. ``invalid_json``), ``field``
            (string, the dotted field at fault, null when the line is not even JSON),
            ``reason`` (string), ``raw`` (binary: the line verbatim, which need not be UTF-8).
        files: sources read.
        lines: non-blank lines read; always ``events + duplicates + rejects``.
        duplicates: valid lines equal to an earlier event, not in ``events``.
    """

    __slots__ = ("duplicates", "events", "files", "lines", "rejects")

    def __init__(
        self, events: Table, rejects: Table, files: int, lines: int, duplicates: int
    ) -> None:
        self.events = events
        self.rejects = rejects
        self.files = files
        self.lines = lines
        self.duplicates = duplicates

    def __repr__(self) -> str:
        return (
            f"ReadResult(files={self.files}, lines={self.lines}, events={len(self.events)}, "
            f"duplicates={self.duplicates}, rejects={len(self.rejects)})"
        )


def read_events(paths_or_bytes: PathsOrBytes, *, strict: bool = False) -> ReadResult:
    """Reads NDJSON event files, folders or bytes into typed tables.

    Bad lines go to ``.rejects``; with ``strict=True`` the first one raises
    :class:`ParseError` instead. A path that cannot be read raises ``OSError``.

    >>> r = d2d.read_events(b'{"event":"register","on":"vehicle","at":"2019-06-01T18:17:04Z",'
    ...                     b'"data":{"id":"v1"},"organization_id":"o"}\\nnot json\\n')
    >>> (len(r.events), len(r.rejects), r.lines)               # doctest: +SKIP
    (1, 1, 2)
    """
    events, rejects, counts = _d2d.read_events(paths_or_bytes, strict=strict)
    return ReadResult(
        Table(_tables.table(events)),
        Table(_tables.table(rejects)),
        files=counts["files"],
        lines=counts["lines"],
        duplicates=counts["duplicates"],
    )


class Profile(dict):  # type: ignore[type-arg]
    """The data-check profile: a ``dict``, plus :meth:`to_pandas`.

    Keys, as in the Rust ``d2d_model::check::Profile`` (and ``data_check --json``):
    ``files, lines, events, rejects, duplicates`` (int), ``by_kind`` (kind -> count, every kind
    present), ``reject_reasons`` (code -> count), ``vehicles, periods`` (distinct ids),
    ``missing`` (optional field -> valid events lacking it), ``time_ranges`` (timestamp field ->
    ``{"min", "max"}`` as UTC ``datetime``), ``coordinate_ranges`` (``data.location.lat`` /
    ``lng`` -> ``{"min", "max"}`` floats). Fields never seen have no range.
    """

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy."""
        return dict(self)

    def to_pandas(self) -> pd.DataFrame:
        """The profile in long form, one row per number: columns ``section``, ``name``,
        ``stat``, ``value``.

        ``section`` is ``counts``, ``by_kind``, ``reject_reasons``, ``missing``,
        ``time_ranges`` or ``coordinate_ranges``; ``stat`` is ``count`` for counts and
        ``min``/``max`` for ranges; ``value`` holds ints, UTC ``Timestamp``s or floats (object
        dtype, since the sections differ in type).
        """
        import pandas as pd  # noqa: PLC0415 -- `import d2d` stays fast without pandas

        rows: list[tuple[str, str, str, Any]] = []
        for key in ("files", "lines", "events", "rejects", "duplicates", "vehicles", "periods"):
            rows.append(("counts", key, "count", self[key]))
        for section in ("by_kind", "reject_reasons", "missing"):
            rows.extend((section, name, "count", n) for name, n in self[section].items())
        for section in ("time_ranges", "coordinate_ranges"):
            for name, r in self[section].items():
                for stat in ("min", "max"):
                    v = pd.Timestamp(r[stat]) if section == "time_ranges" else r[stat]
                    rows.append((section, name, stat, v))
        frame = pd.DataFrame(rows, columns=["section", "name", "stat", "value"])
        frame["value"] = frame["value"].astype(object)
        return frame


def data_check(paths_or_bytes: PathsOrBytes) -> Profile:
    """Profiles the input exactly as the Rust data check does (``d2d_model::check::profile``).

    Returns a :class:`Profile`: a ``dict`` (see there for the keys) with ``.to_pandas()``.
    """
    return Profile(_d2d.data_check(paths_or_bytes))


def distances(paths_or_bytes: PathsOrBytes, *, max_speed_mps: float | None = None) -> pd.DataFrame:
    """Distance travelled by each vehicle during each operating period.

    The very rows of the Rust ``d2d_model::distance::period_distances`` (after
    ``resolve_periods`` and ``tracks``): for each non-deleted period and each vehicle with a
    fix inside ``[start, finish]``, the haversine length (Earth radius 6,371,008.8 m) of its
    de-duplicated, time-ordered fixes. Sorted by ``period_id``, then ``vehicle_id``.

    ``max_speed_mps``: drop fixes that would need a higher speed (m/s) from the last kept fix;
    ``None`` (the default) keeps every fix, since the sample feed is a sped-up replay.

    Columns: ``period_id``, ``vehicle_id`` (str), ``fixes`` (int64: fixes used),
    ``first_at``, ``last_at`` (``datetime64[us, UTC]``), ``metres`` (float64).
    """
    return _tables.table(_d2d.distances(paths_or_bytes, max_speed_mps=max_speed_mps)).to_pandas()
