"""Type stubs of the native module ``d2d._d2d`` (hand-written; checked by mypy.stubtest)."""

import datetime
from collections.abc import Callable, Iterable
from typing import Any, Final, final

# A source descriptor (see d2d/_inputs.py): a local file path, (name, bytes) or (name, reader).
_Descriptor = str | tuple[str, Any]
_Sources = Iterable[_Descriptor]
_Progress = Callable[[int, int | None], object] | None

__all__ = [
    "ArrowTable",
    "D2dError",
    "Event",
    "Location",
    "ParseError",
    "Period",
    "Summary",
    "__version__",
    "data_check",
    "distances",
    "landing_order",
    "parse_line",
    "parse_range",
    "read_events",
    "walk",
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
class ArrowTable:
    """A table built in Rust, exported through the Arrow PyCapsule protocol."""

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """The table as an ``arrow_array_stream`` PyCapsule (the Arrow PyCapsule protocol)."""
    @property
    def num_rows(self) -> int: ...

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

@final
class Summary:
    """What read_events keeps besides its tables: the profile, the tracks and the periods."""

    def profile(self) -> dict[str, Any]:
        """The data-check profile of the read, as a dict."""
    def distances(self, *, max_speed_mps: float | None = None) -> ArrowTable:
        """Distance per (operating period, vehicle) of the read, as an Arrow table."""

def read_events(
    sources: _Sources,
    *,
    strict: bool = False,
    progress: _Progress = None,
    total: int | None = None,
) -> tuple[ArrowTable, ArrowTable, dict[str, int], Summary]: ...
def data_check(
    sources: _Sources, *, progress: _Progress = None, total: int | None = None
) -> dict[str, Any]: ...
def distances(
    sources: _Sources,
    *,
    max_speed_mps: float | None = None,
    progress: _Progress = None,
    total: int | None = None,
) -> tuple[ArrowTable, dict[str, int]]: ...
def parse_range(
    name: str, data: bytes, *, first_line: int = 0, whole: bool = True
) -> tuple[ArrowTable, ArrowTable, int]: ...
def walk(folder: str) -> tuple[list[str], list[str]]: ...
def landing_order(names: list[str], *, only_event_files: bool) -> tuple[list[str], list[str]]: ...
def parse_line(raw: bytes | str, *, source: str = "<line>", line: int = 1) -> Event:
    """Parses one NDJSON line into an :class:`Event`; raises :class:`ParseError` if invalid.

    A trailing ``\\n`` or ``\\r\\n`` is ignored. ``source`` and ``line`` only label the error.
    """
