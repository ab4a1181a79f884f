"""d2d.parse_line: typed event objects and ParseError."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from conftest import REGISTER, period, update

import d2d


def test_update_has_its_location():
    e = d2d.parse_line(update("v1", 52.45, 13.46, "18:17:10.101Z").encode())
    assert isinstance(e, d2d.Event)
    assert e.kind == "vehicle.update"
    assert e.at == datetime(2019, 6, 1, 18, 17, 10, 101000, tzinfo=timezone.utc)
    assert e.organization_id == "org"
    assert e.vehicle_id == "v1"
    assert e.period is None
    loc = e.location
    assert isinstance(loc, d2d.Location)
    assert (loc.lat, loc.lng) == (52.45, 13.46)
    assert loc.at.utcoffset().total_seconds() == 0
    assert repr(e) == (
        "Event(kind='vehicle.update', at='2019-06-01T18:17:10.101Z', organization_id='org', "
        "vehicle_id='v1', location=Location(lat=52.45, lng=13.46, at='2019-06-01T18:17:10.101Z'))"
    )


def test_register_and_period_events():
    r = d2d.parse_line(REGISTER % "v9")
    assert (r.kind, r.vehicle_id, r.location, r.period) == ("vehicle.register", "v9", None, None)
    assert "location=None" in repr(r)
    p = d2d.parse_line(period("op_1", "18:23:04.079Z", "18:28:04.079Z", verb="delete"))
    assert p.kind == "operating_period.delete"
    assert p.vehicle_id is None and p.location is None
    assert isinstance(p.period, d2d.Period)
    assert p.period.id == "op_1"
    assert p.period.finish - p.period.start == (
        datetime(2019, 6, 1, 18, 28, 4, 79000) - datetime(2019, 6, 1, 18, 23, 4, 79000)
    )
    assert repr(p.period) == (
        "Period(id='op_1', start='2019-06-01T18:23:04.079Z', finish='2019-06-01T18:28:04.079Z')"
    )


def test_events_compare_hash_and_serialise():
    text = update("v1", 52.45, 13.46, "18:17:10.101Z")
    a, b = d2d.parse_line(text), d2d.parse_line(text.encode() + b"\r\n")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != d2d.parse_line(update("v2", 52.45, 13.46, "18:17:10.101Z"))
    assert json.loads(a.to_json()) == json.loads(text)


@pytest.mark.parametrize(
    ("line", "code", "field", "reason"),
    [
        (update("v1", 91.2, 13.4, "10:00:00Z"), "invalid_coordinate", "data.location.lat",
         "data.location.lat: 91.2 is outside [-90, 90]"),
        ("{", "invalid_json", None, None),
        ("[1]", "not_an_object", None, "not a JSON object"),
        ('{"on":"vehicle"}', "missing_field", "event", "event: missing or null"),
        (update("v1", 1, 1, "10:00:00Z").replace('"update"', '"teleport"'), "unknown_kind", None,
         'on/event: unknown event kind "vehicle"/"teleport"'),
    ],
)  # fmt: skip
def test_bad_lines_raise_parse_error(line, code, field, reason):
    with pytest.raises(d2d.ParseError) as info:
        d2d.parse_line(line, source="feed.txt", line=7)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, d2d.D2dError)
    assert (err.source, err.line, err.code, err.field) == ("feed.txt", 7, code, field)
    assert err.raw == line.encode()
    if reason is not None:
        assert err.reason == reason
        assert str(err) == f"feed.txt:7: {reason}"


def test_parse_error_defaults_and_non_utf8():
    with pytest.raises(d2d.ParseError) as info:
        d2d.parse_line(b"\xff")
    assert (info.value.source, info.value.line, info.value.code) == ("<line>", 1, "invalid_utf8")


def test_wrong_type_raises_type_error():
    with pytest.raises(TypeError, match="bytes or str"):
        d2d.parse_line(12)  # type: ignore[arg-type]
