"""Peak memory of the daily load on landing files of unusual size: one 1 GiB file, a file
holding one 200 MiB line, a file holding one 1 GiB line, beside a day of the same events in
usual files (1,000 files). Each is loaded by ``daily_load`` into a fresh database of
``DATABASE_URL`` (local landing and lake folders); wall time and peak RSS (``ru_maxrss`` from
``wait4``) per run, median and range over ``--repeat`` runs, for every ``--bin`` given, in the
same session, alternating builds run by run. Prints a Markdown table.

    scripts/bench-large-files --bin target/release/examples --bin /tmp/old/examples
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

MIB = 1 << 20


def fix(i: int) -> bytes:
    s, v = i % 86_400, i % 1_997
    at = f"2019-06-01T{s // 3600:02}:{s // 60 % 60:02}:{s % 60:02}Z"
    return (
        f'{{"event":"update","on":"vehicle","at":"{at}","data":{{"id":"v{v}",'
        f'"location":{{"lat":52.{i:07},"lng":13.4,"at":"{at}"}}}},"organization_id":"org"}}\n'
    ).encode()


def write_fixes(out, start: int, size: int) -> int:
    """Writes fixes from number ``start`` until ``size`` bytes; returns the next number."""
    written, i = 0, start
    while written < size:
        n = min(10_000, (size - written) // 200 + 1)
        chunk = b"".join(fix(j) for j in range(i, i + n))
        out.write(chunk)
        written += len(chunk)
        i += n
    return i


def write_long_line(out, size: int) -> None:
    block = b"a" * MIB
    out.write(b'{"event":"')
    left = size - 10
    while left > 0:
        out.write(block[: min(left, MIB)])
        left -= MIB
    out.write(b"\n")


def make_inputs(root: Path, file_mib: int, line_mib: int, big_line_mib: int) -> dict[str, Path]:
    """Landing folders, one per input, named for the table."""
    inputs = {}

    def landing(name: str) -> Path:
        d = root / name / "data"
        d.mkdir(parents=True)
        inputs[name] = d.parent
        return d

    with open(landing(f"one {file_mib} MiB file") / "2019-06-01-9-0-0-events.txt", "wb") as f:
        write_fixes(f, 0, file_mib * MIB)
    d = landing(f"{file_mib} MiB in 1,000 files")
    i = 0
    for n in range(1000):
        with open(d / f"2019-06-01-9-{n // 60}-{n % 60}-events.txt", "wb") as f:
            i = write_fixes(f, i, file_mib * MIB // 1000)
    for mib in (line_mib, big_line_mib):
        with open(landing(f"a {mib} MiB line") / "2019-06-01-9-0-0-events.txt", "wb") as f:
            i = write_fixes(f, 0, 8 * MIB)
            write_long_line(f, mib * MIB)
            write_fixes(f, i, 8 * MIB)
    return inputs


def database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def measured(cmd: list[str], env: dict, log: Path) -> tuple[float, float]:
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed; log {log}")
    return wall, usage.ru_maxrss / 1024


def span(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", action="append", required=True, help="a folder holding daily_load")
    p.add_argument("--label", action="append", help="a name per --bin (default: the folder)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--file-mib", type=int, default=1024)
    p.add_argument("--line-mib", type=int, default=200)
    p.add_argument("--big-line-mib", type=int, default=1024)
    p.add_argument("--work-dir", default=None, help="scratch (default: $TMPDIR)")
    args = p.parse_args()
    labels = args.label or args.bin
    admin = os.environ["DATABASE_URL"]
    work = Path(tempfile.mkdtemp(prefix="d2d-bench-large-", dir=args.work_dir))
    log = work / "runs.log"
    try:
        inputs = make_inputs(work, args.file_mib, args.line_mib, args.big_line_mib)
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for name, landing in inputs.items():
            for r in range(args.repeat):
                order = list(zip(labels, args.bin))
                if r % 2:
                    order.reverse()
                for label, bin_dir in order:
                    db = f"d2d_bench_large_{os.getpid()}"
                    url = database(admin, db)
                    env = dict(os.environ, DATABASE_URL=url)
                    subprocess.run(
                        [f"{bin_dir}/setup_warehouse"], env=env, check=True, capture_output=True
                    )
                    lake = work / "lake"
                    shutil.rmtree(lake, ignore_errors=True)
                    cmd = [f"{bin_dir}/daily_load", "--date", "2019-06-01", "--output", "json",
                           "--landing", str(landing), "--lake", str(lake)]  # fmt: skip
                    results.setdefault((name, label), []).append(measured(cmd, env, log))
                    drop(admin, db)
        print("| input | build | wall s | peak RSS MiB |")
        print("|---|---|---|---|")
        for (name, label), runs in results.items():
            walls = [w for w, _ in runs]
            rss = [m for _, m in runs]
            print(f"| {name} | {label} | {span(walls, '{:.1f}')} | {span(rss, '{:.0f}')} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
