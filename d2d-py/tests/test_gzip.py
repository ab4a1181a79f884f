"""Gzip landing files are read decompressed, by the same d2d-model code as the daily run."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from conftest import REGISTER, update

import d2d

LINES = (REGISTER % "gz1" + "\n" + update("gz1", 52.5, 13.4, "10:00:00Z") + "\n").encode()


def test_gz_files_and_gzip_bytes_are_decompressed(tmp_path: Path):
    (tmp_path / "2019-06-01-10-0-0-events.txt.gz").write_bytes(gzip.compress(LINES))
    # gzip under a plain name is recognised by its magic bytes.
    (tmp_path / "2019-06-01-10-0-1-events.txt").write_bytes(gzip.compress(LINES))
    r = d2d.read_events(tmp_path)
    assert (r.files, r.lines, len(r.rejects)) == (2, 4, 0)
    assert len(r.events) == 2 and r.duplicates == 2
    assert len(d2d.read_events(gzip.compress(LINES)).events) == 2
    # Two members, as `cat a.gz b.gz` makes, read as one stream.
    cut = LINES.index(b"\n") + 1
    two = gzip.compress(LINES[:cut]) + gzip.compress(LINES[cut:])
    assert len(d2d.read_events(two).events) == 2


def test_a_broken_gz_file_is_an_os_error_naming_it(tmp_path: Path):
    broken = tmp_path / "2019-06-01-10-0-0-events.txt.gz"
    whole = gzip.compress(LINES * 50)
    broken.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(OSError, match="not valid gzip") as info:
        d2d.read_events(broken)
    assert str(broken) in str(info.value)
