"""What the functions read: globs, file objects, iterables of bytes, s3:// URLs, skipped files,
empty input, and large sources cut into pieces."""

from __future__ import annotations

import io
import uuid
import warnings
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import REGISTER, s3_options, update

import d2d


def _events(r: d2d.ReadResult) -> pa.Table:
    """The events without their `source` column, to compare reads of the same bytes."""
    return r.events.to_arrow().drop_columns(["source_key", "source_time"])


def test_a_glob_reads_the_files_it_matches_in_landing_order(landing: Path, landing_files):
    r = d2d.read_events(str(landing / "**" / "2019-06-01-15-17-*-events.txt"))
    want = [p for p in landing_files if p.name.startswith("2019-06-01-15-17-")]
    assert r.files == len(want) == 57
    sources = list(dict.fromkeys(r.events.to_pandas()["source_key"].astype(str)))
    assert sources == [str(p) for p in want]


def test_a_glob_that_matches_nothing_warns(tmp_path: Path):
    with pytest.warns(d2d.EmptyInputWarning, match="no input"):
        r = d2d.read_events(str(tmp_path / "**" / "*.txt"))
    assert (r.files, len(r.events)) == (0, 0)


def test_an_empty_folder_warns_and_so_do_empty_files(tmp_path: Path):
    with pytest.warns(d2d.EmptyInputWarning, match="no input"):
        assert d2d.data_check(tmp_path)["files"] == 0
    (tmp_path / "2019-06-01-15-17-3-events.txt").write_bytes(b"\n")
    with pytest.warns(d2d.EmptyInputWarning, match="hold no line"):
        assert d2d.distances(tmp_path).num_rows == 0


def test_no_warning_for_a_normal_read(landing_files):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d2d.read_events(landing_files[:3])


def test_files_that_are_not_event_files_are_skipped_and_reported(tmp_path: Path):
    (tmp_path / "2019-06-01-15-17-3-events.txt").write_text(REGISTER % "v1" + "\n")
    (tmp_path / "more.ndjson").write_text(REGISTER % "v2" + "\n")
    (tmp_path / "README.md").write_text("# Landing\n\nNot events.\n")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    for call in (d2d.read_events, d2d.data_check, d2d.distances):
        with pytest.warns(d2d.SkippedFilesWarning, match=r"skipped 2 file\(s\).*README.md"):
            call(tmp_path)
    with pytest.warns(d2d.SkippedFilesWarning):
        r = d2d.read_events(tmp_path)
    assert (r.files, len(r.events), len(r.rejects)) == (2, 2, 0)
    assert [Path(p).name for p in r.skipped] == ["README.md", "logo.png"]
    with pytest.warns(d2d.SkippedFilesWarning):
        assert d2d.data_check(tmp_path).skipped == r.skipped
    # Named explicitly, a file is read whatever its name.
    explicit = d2d.read_events(tmp_path / "README.md")
    assert (explicit.files, len(explicit.rejects)) == (1, 2)


def test_file_objects_are_read_in_pieces(landing_files, sample_bytes: bytes):
    path = landing_files[1]
    with path.open("rb") as f:
        r = d2d.read_events(f)
    assert r.events.to_pandas()["source_key"].astype(str)[0] == str(path)
    assert _events(r).equals(_events(d2d.read_events(path)))
    anonymous = d2d.read_events(io.BytesIO(sample_bytes))
    assert anonymous.events.to_pandas()["source_key"].astype(str)[0] == "<file>"
    assert _events(anonymous).equals(_events(d2d.read_events(sample_bytes)))
    text = d2d.read_events(io.StringIO(path.read_text()))
    assert _events(text).equals(_events(r))


def test_a_file_object_must_give_bytes_or_str():
    class Odd:
        def read(self, n: int) -> int:
            return 3

    with pytest.raises(TypeError, match="read"):
        d2d.read_events(Odd())


def test_iterables_of_bytes_and_paths_are_read_lazily_in_order(landing_files):
    def blobs():
        yield (REGISTER % "v1").encode()
        yield b"not json"
        yield (REGISTER % "v2").encode()

    r = d2d.read_events(blobs())
    assert list(r.events.to_pandas()["source_key"].astype(str)) == ["<bytes[0]>", "<bytes[2]>"]
    assert list(r.rejects.to_pandas()["source_key"].astype(str)) == ["<bytes[1]>"]
    paths = d2d.read_events(p for p in landing_files[:5])
    assert paths.files == 5
    assert _events(paths).equals(_events(d2d.read_events(landing_files[:5])))
    assert d2d.read_events(memoryview(b"x\n")).rejects.num_rows == 1


def test_large_sources_number_their_lines_across_pieces(tmp_path: Path):
    # 3 MB, so the file, the bytes and the file object are each cut into many pieces; the bad
    # lines sit just around the cuts.
    good = update("v", 52.5, 13.4, "10:00:00Z")
    lines = [good.replace('"v"', f'"v{i}"') for i in range(16_000)]
    bad = [1, 1_199, 1_200, 1_201, 9_999, 16_000]
    for n in bad:
        lines[n - 1] = f"bad {n}"
    body = ("\r\n".join(lines) + "\r\n").encode()
    assert len(body) > 10 * 256 * 1024
    path = tmp_path / "big.ndjson"
    path.write_bytes(body)
    for source in (path, body, io.BytesIO(body)):
        r = d2d.read_events(source)
        assert (r.lines, len(r.events), len(r.rejects)) == (16_000, 16_000 - len(bad), len(bad))
        rejects = r.rejects.to_pandas()
        assert list(rejects["line"]) == bad
        assert [raw.decode() for raw in rejects["raw"]] == [f"bad {n}" for n in bad]
        assert r.events.to_pandas()["line"].iloc[-1] == 15_999


def test_duplicates_across_pieces_are_found(tmp_path: Path):
    line = update("v", 1.0, 2.0, "10:00:00Z") + "\n"
    filler = "".join(
        update("w", 1.0, 2.0, f"10:{m:02d}:{s:02d}Z") + "\n" for m in range(60) for s in range(60)
    )
    body = (line + filler + line + filler + line).encode()
    r = d2d.read_events(body)
    assert r.duplicates == 1 + 3600 + 1
    assert d2d.data_check(body)["duplicates"] == r.duplicates


def test_unknown_url_schemes_need_fsspec_or_fail_clearly():
    with pytest.raises((ImportError, ValueError)):
        d2d.read_events("nosuchscheme://bucket/key")


@pytest.fixture(scope="module")
def s3_day(landing_files):
    """A bucket on the local S3-compatible server holding 30 sample files and a README."""
    options = s3_options()
    import s3fs  # noqa: PLC0415 -- s3_options skips the test without it

    fs = s3fs.S3FileSystem(**options)
    bucket = f"d2d-py-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    files = landing_files[:30]
    for p in files:
        fs.pipe(f"{bucket}/landing/{p.relative_to(p.parents[5])}", p.read_bytes())
    fs.pipe(f"{bucket}/landing/README.md", b"# not events\n")
    yield f"s3://{bucket}/landing", options, files
    fs.rm(bucket, recursive=True)


def test_s3_prefixes_are_read_like_folders(s3_day):
    url, options, files = s3_day
    with pytest.warns(d2d.SkippedFilesWarning, match="README.md"):
        r = d2d.read_events(url, storage_options=options)
    assert r.files == len(files)
    assert r.skipped == [f"{url}/README.md"]
    local = d2d.read_events(files)
    assert _events(r).equals(_events(local))
    sources = list(dict.fromkeys(r.events.to_pandas()["source_key"].astype(str)))
    assert sources == [f"{url}/{p.relative_to(p.parents[5])}" for p in files]
    with pytest.warns(d2d.SkippedFilesWarning):
        profile = d2d.data_check(url, storage_options=options, progress=True)
    assert profile == d2d.data_check(local)


def test_s3_globs_and_single_objects(s3_day):
    url, options, files = s3_day
    one = f"{url}/{files[0].relative_to(files[0].parents[5])}"
    assert d2d.read_events(one, storage_options=options).files == 1
    r = d2d.read_events(f"{url}/**/*-15-17-1*-events.txt", storage_options=options)
    assert r.files == len([p for p in files if p.name.startswith("2019-06-01-15-17-1")]) == 10
