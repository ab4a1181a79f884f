#!/usr/bin/env python3
"""Writes the bad-input corpus of testdata/bad/ (run from anywhere; the files are committed).

Each file holds one kind of broken input (see README.md for the table of outcomes). Valid lines
use a vehicle id named after their file, so no two files share an event except where a file
repeats another on purpose.
"""

from __future__ import annotations

import gzip
from pathlib import Path

HERE = Path(__file__).resolve().parent


def update(v: str, t: str, lat: object = 52.5, lng: object = 13.4, extra: str = "") -> str:
    return (
        '{"event":"update","on":"vehicle","at":"2019-06-01T%sZ","data":{"id":"%s",'
        '"location":{"lat":%s,"lng":%s,"at":"2019-06-01T%sZ"}}%s,"organization_id":"org"}'
        % (t, v, lat, lng, t, extra)
    )


def register(v: str, t: str, data_extra: str = "") -> str:
    return (
        '{"event":"register","on":"vehicle","at":"2019-06-01T%sZ","data":{"id":"%s"%s},'
        '"organization_id":"org"}' % (t, v, data_extra)
    )


def period(pid: str, start: str, finish: str) -> str:
    return (
        '{"event":"create","on":"operating_period","at":"2019-06-01T09:00:00Z","data":{"id":"%s",'
        '"start":"2019-06-01T%sZ","finish":"2019-06-01T%sZ"},"organization_id":"org"}'
        % (pid, start, finish)
    )


def write(name: str, data: bytes | str) -> None:
    (HERE / name).write_bytes(data.encode() if isinstance(data, str) else data)


def lines(*ls: str, end: str = "\n") -> str:
    return "".join(line + end for line in ls)


def main() -> None:
    write("bom.txt", "\ufeff" + lines(update("bom", "10:00:00"), update("bom", "10:00:01")))
    nul = update("nul", "10:00:00").replace('"nul"', '"n\x00ul"')
    write(
        "nul-bytes.txt",
        lines(nul, "\x00\x00\x00\x00", update("nul", "10:00:01").replace('"nul"', '"n\\u0000ul"'),
              update("nul", "10:00:02")),
    )
    write("crlf.txt", lines(update("crlf", "10:00:00"), update("crlf", "10:00:01"), end="\r\n"))
    write("cr-only.txt", lines(update("cr", "10:00:00"), update("cr", "10:00:01"), end="\r"))
    write(
        "truncated-last-line.txt",
        lines(update("trunc", "10:00:00")) + update("trunc", "10:00:01")[:60],
    )
    write(
        "no-final-newline.txt",
        update("nofinal", "10:00:00") + "\n" + update("nofinal", "10:00:01"),
    )
    write("blank-lines.txt", "\n   \n\t\n" + lines(update("blank", "10:00:00")) + "\n\n")
    write("only-blank-lines.txt", "\n \n\t\r\n\n")
    write("empty.txt", b"")
    write(
        "wrong-types.txt",
        lines(
            update("types", "10:00:00", lat='"52.5"'),
            update("types", "10:00:01").replace('"id":"types"', '"id":42'),
            update("types", "10:00:02").replace('"at":"2019-06-01T10:00:02Z","data"', '"at":1559383202,"data"'),
            '{"event":"update","on":"vehicle","at":"2019-06-01T10:00:03Z","data":[],"organization_id":"org"}',
            update("types", "10:00:04").replace('"location":{', '"location":"52.5,13.4","x":{'),
            update("types", "10:00:05"),
        ),
    )
    write(
        "missing-fields.txt",
        lines(
            update("missing", "10:00:00").replace('"event":"update",', ""),
            update("missing", "10:00:01").replace('"id":"missing",', ""),
            '{"event":"update","on":"vehicle","at":"2019-06-01T10:00:02Z","data":{"id":"missing"},"organization_id":"org"}',
            update("missing", "10:00:03").replace(',"organization_id":"org"', ""),
            update("missing", "10:00:04"),
        ),
    )
    write(
        "null-fields.txt",
        lines(
            update("nulls", "10:00:00").replace('"at":"2019-06-01T10:00:00Z","data"', '"at":null,"data"'),
            '{"event":"update","on":"vehicle","at":"2019-06-01T10:00:01Z","data":null,"organization_id":"org"}',
            register("nulls", "10:00:02", ',"location":null'),
            update("nulls", "10:00:03", lat="null"),
        ),
    )
    depth = 20_000
    write(
        "deep-nesting.txt",
        lines(
            update("deep", "10:00:00", extra=',"x":' + "[" * depth + "]" * depth),
            "[" * depth + "]" * depth,
            update("deep", "10:00:01").replace('"id":"deep"', '"id":' + "[" * depth + "]" * depth),
            "{" + '"a":{' * depth + "}" * (depth + 1),
        ),
    )
    write(
        "huge-numbers.txt",
        lines(
            update("huge", "10:00:00", lat="1e400"),
            update("huge", "10:00:01", lat="123456789012345678901234567890.0"),
            update("huge", "10:00:02", lat="1e-400"),
            update("huge", "10:00:03", lat="0." + "0" * 1000 + "1"),
            update("huge", "10:00:04", lng="-" + "9" * 400),
        ),
    )
    write(
        "lone-surrogates.txt",
        lines(
            update("x", "10:00:00").replace('"id":"x"', '"id":"\\ud800"'),
            update("x", "10:00:01").replace('"id":"x"', '"id":"\\udc00x"'),
            update("x", "10:00:02").replace('"id":"x"', '"id":"surrogate\\ud83d\\ude97"'),
        ),
    )
    write(
        "invalid-utf8.txt",
        lines(update("utf8", "10:00:00")).encode()
        + update("utf8", "10:00:01").replace("utf8", "utf8\udcff", 1).encode("utf-8", "surrogateescape")
        + b"\n"
        + update("utf8", "10:00:02").replace('"utf8"', '"\udcc0\udcaf"', 1).encode("utf-8", "surrogateescape")
        + b"\n",
    )
    write("utf16.txt", lines(update("utf16", "10:00:00")).encode("utf-16"))
    write("not-an-object.txt", lines("[]", '"text"', "42", "null", "true"))
    write(
        "trailing-garbage.txt",
        lines(update("garbage", "10:00:00") + " x", update("garbage", "10:00:01") + update("garbage", "10:00:02")),
    )
    write(
        "duplicate-keys.txt",
        lines(
            update("dupkey", "10:00:00").replace('"on":"vehicle"', '"on":"vehicle","on":"vehicle"'),
            update("dupkey", "10:00:01").replace('"id":"dupkey"', '"id":"dupkey","id":"other"'),
        ),
    )
    write(
        "unknown-kind.txt",
        lines(
            update("kind", "10:00:00").replace('"on":"vehicle"', '"on":"bicycle"'),
            update("kind", "10:00:01").replace('"event":"update"', '"event":"teleport"'),
            update("kind", "10:00:02").replace('"event":"update"', '"event":"Update"'),
        ),
    )
    write(
        "bad-ids.txt",
        lines(
            update("ids", "10:00:00").replace('"id":"ids"', '"id":""'),
            update("ids", "10:00:01").replace('"id":"ids"', '"id":"i\\u0007ds"'),
            update("ids", "10:00:02").replace('"organization_id":"org"', '"organization_id":""'),
        ),
    )
    write(
        "bad-coordinates.txt",
        lines(
            update("coords", "10:00:00", lat=91),
            update("coords", "10:00:01", lng=-180.5),
            update("coords", "10:00:02", lat="NaN"),
            update("coords", "10:00:03", lat='"NaN"'),
        ),
    )
    write(
        "bad-timestamps.txt",
        lines(
            update("ts", "10:00:00").replace("2019-06-01T10:00:00Z", "2019-06-01T10:00:00", 1),
            update("ts", "10:00:01").replace("2019-06-01T10:00:01Z", "2019-13-01T10:00:01Z", 1),
            update("ts", "10:00:02").replace("2019-06-01T10:00:02Z", "yesterday", 1),
            update("ts", "10:00:03").replace("2019-06-01T10:00:03Z", "", 1),
            update("ts", "10:00:04").replace("2019-06-01T10:00:04Z", "2019-06-01T10:00:04Z", 1)
            .replace('"at":"2019-06-01T10:00:04Z"}', '"at":"2019-06-01 10:00:04"}'),
        ),
    )
    write("finish-before-start.txt", lines(period("op_bad", "12:00:00", "11:00:00")))
    write("duplicate-lines.txt", lines(*[update("dupline", "10:00:00")] * 3))
    write(
        "extra-fields.txt",
        lines(
            update("extra", "10:00:00", extra=',"speed":12.5').replace('"org"}', '"org","version":2}'),
            register("extra", "10:00:01", ',"model":{"seats":6}'),
        ),
    )
    write(
        "escapes.txt",
        lines(
            update("esc", "10:00:00").replace('"id":"esc"', '"id":"\\u0065sc"'),
            update("esc", "10:00:01").replace('"organization_id":"org"', '"organization_id":"o\\/rg"'),
        ),
    )
    write("empty-object.txt", lines("{}"))
    write(
        "timestamp-offsets.txt",
        lines(update("offset", "10:00:00").replace("2019-06-01T10:00:00Z", "2019-06-01T12:00:00+02:00")),
    )
    write(
        "timestamp-years.txt",
        lines(
            period("op_y0", "10:00:00", "11:00:00").replace("2019-06-01T10:00:00Z", "0001-01-01T00:00:00+14:00"),
            period("op_y10k", "10:00:00", "11:00:00").replace("2019-06-01T11:00:00Z", "9999-12-31T23:59:59-14:00"),
            update("yr", "10:00:00").replace("2019-06-01T10:00:00Z", "0000-12-31T23:59:59Z"),
            period("op_first", "10:00:00", "11:00:00")
            .replace("2019-06-01T10:00:00Z", "0001-01-01T00:00:00Z")
            .replace("2019-06-01T11:00:00Z", "0001-01-01T01:00:00Z"),
            update("yr", "10:00:01").replace("2019-06-01T10:00:01Z", "0001-01-01T00:30:00Z"),
            period("op_last", "10:00:00", "11:00:00")
            .replace("2019-06-01T10:00:00Z", "9999-12-31T23:00:00Z")
            .replace("2019-06-01T11:00:00Z", "9999-12-31T23:59:59.999999Z"),
            update("yr", "10:00:02").replace("2019-06-01T10:00:02Z", "9999-12-31T23:59:59.999999Z"),
        ),
    )
    write("whitespace-padded.txt", lines("  \t" + update("pad", "10:00:00") + "   "))
    write("control-chars.txt", lines(update("ctl", "10:00:00").replace('"id":"ctl"', '"id":"c\tl"')))
    write("stray-copy.txt", lines(update("stray", "10:00:00")))
    write("dup-file.txt", lines(update("dupfile", "10:00:00"), update("dupfile", "10:00:01")))
    write("gzip.txt.gz", gzip.compress(lines(update("gz", "10:00:00"), update("gz", "10:00:01")).encode(), mtime=0))
    write("gzip-magic.txt", gzip.compress(lines(update("gzmagic", "10:00:00"), update("gzmagic", "10:00:01")).encode(), mtime=0))
    write(
        "gzip-multi-member.txt.gz",
        gzip.compress(lines(update("gzmulti", "10:00:00")).encode(), mtime=0)
        + gzip.compress(lines(update("gzmulti", "10:00:01")).encode(), mtime=0),
    )
    whole = gzip.compress(lines(*[update("gztrunc", "10:00:%02d" % s) for s in range(30)]).encode(), mtime=0)
    write("gzip-truncated.txt.gz", whole[: len(whole) // 2])
    write("not-gzip.txt.gz", lines(update("notgz", "10:00:00")))
    write("events.gz", gzip.compress(lines(update("eventsgz", "10:00:00"), update("eventsgz", "10:00:01")).encode(), mtime=0))


if __name__ == "__main__":
    main()
