"""From what a user passes to the source descriptors the native module reads.

A descriptor is one source: a local file path (``str``), ``(name, bytes)``, or ``(name,
reader)`` where ``reader`` has ``.read(n)``. See ``d2d-py/src/inputs.rs`` for the other half.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Union

from . import _d2d

_Input = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, Any]
Descriptor = Union[str, "tuple[str, Any]"]

EXPECTED = (
    "expected a path (str or os.PathLike) to a file or folder, a glob, an s3:// URL, bytes, "
    "a binary file object, or an iterable of these"
)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB = re.compile(r"[*?[]")


class Plan:
    """The descriptors of an argument, the files left out, and the total size when known."""

    def __init__(self, obj: Any, storage_options: dict[str, Any] | None) -> None:
        self.skipped: list[str] = []
        self.storage_options = storage_options or {}
        self.sizes: list[int | None] = []
        # A generator is read as it goes: it may be endless or large. Everything else is
        # expanded first, which also raises a missing path before any work.
        if _is_iterator(obj):
            self.descriptors: Iterable[Descriptor] = self._expand(obj, "<bytes>")
            self.total: int | None = None
        else:
            self.descriptors = list(self._expand(obj, "<bytes>"))
            known = [s for s in self.sizes if s is not None]
            self.total = sum(known) if len(known) == len(self.sizes) else None

    def _expand(self, obj: Any, name: str) -> Iterator[Descriptor]:
        if isinstance(obj, (bytes, bytearray)):
            self.sizes.append(len(obj))
            yield (name, obj)
        elif isinstance(obj, memoryview):
            self.sizes.append(obj.nbytes)
            yield (name, obj.tobytes())
        elif isinstance(obj, (str, os.PathLike)):
            yield from self._path(os.fspath(obj))
        elif hasattr(obj, "read"):
            self.sizes.append(None)
            yield (_file_name(obj, name.replace("bytes", "file")), obj)
        elif isinstance(obj, Iterable) and not isinstance(obj, Mapping):
            for i, item in enumerate(obj):
                yield from self._expand(item, f"<bytes[{i}]>")
        else:
            raise TypeError(f"{EXPECTED}, got {type(obj).__name__}")

    def _path(self, path: str | bytes) -> Iterator[Descriptor]:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if _URL.match(path) and not path.startswith("file://"):
            yield from self._remote(path)
            return
        if path.startswith("file://"):
            path = path[len("file://") :]
        if os.path.isdir(path):
            found, skipped = _d2d.walk(path)
            self.skipped.extend(skipped)
            yield from self._files(found)
        elif os.path.exists(path) or not _GLOB.search(path):
            os.stat(path)  # raises FileNotFoundError, with the path, for a missing one
            yield from self._files([path])
        else:
            # A glob names its files explicitly: every file it matches is read; a folder it
            # matches is walked like any folder.
            files: list[str] = []
            for match in glob.glob(path, recursive=True):
                if os.path.isdir(match):
                    found, skipped = _d2d.walk(match)
                    files.extend(found)
                    self.skipped.extend(skipped)
                elif os.path.isfile(match):
                    files.append(match)
            ordered, _ = _d2d.landing_order(sorted(set(files)), only_event_files=False)
            yield from self._files(ordered)

    def _files(self, files: list[str]) -> Iterator[Descriptor]:
        for f in files:
            self.sizes.append(_size(f))
            yield f

    def _remote(self, url: str) -> Iterator[Descriptor]:
        try:
            import fsspec  # noqa: PLC0415 -- optional: only URLs need it
        except ImportError:
            raise ImportError(
                f"reading {url.split('://', 1)[0]}:// URLs needs fsspec and its filesystem "
                "(for s3://: pip install s3fs)"
            ) from None
        fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
        if _GLOB.search(path):
            found = fs.glob(path, detail=True)
            keys = {k: v for k, v in found.items() if v.get("type") != "directory"}
            kept, _ = _d2d.landing_order(sorted(keys), only_event_files=False)
        elif fs.isdir(path):
            keys = fs.find(path, detail=True)
            kept, skipped = _d2d.landing_order(sorted(keys), only_event_files=True)
            self.skipped.extend(fs.unstrip_protocol(k) for k in skipped)
        else:
            keys = {path: fs.info(path)}
            kept = [path]
        for key in kept:
            size = keys[key].get("size")
            self.sizes.append(int(size) if size is not None else None)
            yield (fs.unstrip_protocol(key), _RemoteFile(fs, key))


class _RemoteFile:
    """A remote object opened on its first read and closed at its end, so that a folder of
    objects holds one connection at a time."""

    def __init__(self, fs: Any, key: str) -> None:
        self._fs = fs
        self._key = key
        self._file: Any = None
        self._done = False

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        if self._file is None:
            self._file = self._fs.open(self._key, "rb")
        data: bytes = self._file.read(n)
        if not data:
            self._file.close()
            self._done = True
        return data


def _is_iterator(obj: Any) -> bool:
    return isinstance(obj, Iterator) and not hasattr(obj, "read")


def _file_name(obj: Any, default: str) -> str:
    name = getattr(obj, "name", None)
    return os.fspath(name) if isinstance(name, (str, os.PathLike)) else default


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def progress_callback(progress: Any, what: str) -> tuple[Any, Any]:
    """``(callback for the native module, bar to close afterwards)`` for ``progress=``."""
    if progress is False or progress is None:
        return None, None
    if callable(progress):
        return progress, None
    if progress is not True:
        raise TypeError(f"progress must be a bool or a callable, got {type(progress).__name__}")
    try:
        from tqdm.auto import tqdm  # noqa: PLC0415 -- optional
    except ImportError:
        import warnings  # noqa: PLC0415

        warnings.warn(
            "progress=True shows a bar when tqdm is installed (pip install tqdm)",
            stacklevel=3,
        )
        return None, None
    bar = tqdm(desc=what, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return update, bar
