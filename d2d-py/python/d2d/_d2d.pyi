"""Type stubs of the native module ``d2d._d2d`` (hand-written; checked by mypy.stubtest)."""

import datetime
import os
from typing import Any, Final, final

_Input = str | os.PathLike[str] | bytes | bytearray
_PathsOrBytes = _Input | list[_Input] | tuple[_Input, ...]
# (rows, [(column name, column buffers), ...]): see d2d/_tables.py.
_NativeTable = tuple[int, list[tuple[str, tuple[Any, ...]]]]

__all__ = [
    "D2dError",
    "Event",
    "Location",
    "ParseError",
    "Period",
    "__version__",
    "data_check",
    "distances",
    "parse_line",
    "read_events",
]
__version__: Final[str]

class D2dError(Exception):
    """Base class of the errors raised by d2d."""

class ParseError(D2dError, ValueError):
    """A line is not a valid event."""

    source: str
    line: int
    reason: str
    code: str
    field: str | None
    raw: bytes

@final
class Location:
    """A GPS fix: where a vehicle was (WGS 84 degrees) and when (UTC)."""

    @property
    def lat(self) -> float: ...
    @property
    def lng(self) -> float: ...
    @property
    def at(self) -> datetime.datetime: ...

@final
class Period:
    """An operating period (a shift): its id and its UTC window, ``start <= finish``."""

    @property
    def id(self) -> str: ...
    @property
    def start(self) -> datetime.datetime: ...
    @property
    def finish(self) -> datetime.datetime: ...

@final
class Event:
    """One valid event of the feed. Immutable, comparable and hashable."""

    @property
    def kind(self) -> str: ...
    @property
    def at(self) -> datetime.datetime: ...
    @property
    def organization_id(self) -> str: ...
    @property
    def vehicle_id(self) -> str | None: ...
    @property
    def location(self) -> Location | None: ...
    @property
    def period(self) -> Period | None: ...
    def to_json(self) -> str:
        """The event as one line of the feed's JSON."""

def read_events(
    paths_or_bytes: _PathsOrBytes, *, strict: bool = False
) -> tuple[_NativeTable, _NativeTable, dict[str, int]]: ...
def data_check(paths_or_bytes: _PathsOrBytes) -> dict[str, Any]: ...
def distances(
    paths_or_bytes: _PathsOrBytes, *, max_speed_mps: float | None = None
) -> _NativeTable: ...
def parse_line(raw: bytes | str, *, source: str = "<line>", line: int = 1) -> Event:
    """Parses one NDJSON line into an :class:`Event`; raises :class:`ParseError` if invalid.

    A trailing ``\\n`` or ``\\r\\n`` is ignored. ``source`` and ``line`` only label the error.
    """
