"""bench-load: d2d's daily load next to PostgreSQL's own COPY and a pandas baseline, same data.

Run it through ``scripts/bench-load`` (which installs the venv, starts the services if needed
and builds the release examples); ``scripts/bench-load --help`` lists the options.

For each size (events per landing day) it makes the landing day(s), then runs, on the same
files and the same PostgreSQL server:

- ``d2d``: ``daily_load --date D`` into a fresh database (migrated beforehand, untimed) and a
  fresh lake folder, ``--repeat`` times;
- ``d2d re-run``: the same day again on the last of those databases and lakes;
- ``floor bare`` / ``floor indexed``: ``COPY ... FROM 'file'`` of the very rows d2d put in
  ``dwh.fact_vehicle_event`` (exported beforehand as CSV, untimed) into a table with the fact
  table's columns only, and into ``LIKE dwh.fact_vehicle_event INCLUDING ALL`` (its keys,
  indexes and checks, whatever the current migrations make them); only the COPY is timed;
- ``python``: ``benches/baseline/python_load.py`` (pandas + psycopg COPY + SQL merge) into a
  fresh database; its per-period average distances are checked against d2d's;
- ``d2d day 1`` … ``d2d day 7``: seven consecutive days loaded in order into one warehouse;
- ``d2d S3``: the day uploaded to the S3-compatible server (``populate_landing``, untimed),
  then loaded with landing and lake on S3.

Every timed command is preceded by a ``CHECKPOINT`` (untimed). Wall time is the process's
(or the COPY statement's) elapsed time; peak RSS is the child's ``ru_maxrss`` from ``wait4``;
per-phase times come from ``etl.load_run`` (every ``*_ms`` column of the run's row).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sample_days

REPO = Path(__file__).resolve().parents[2]
PG_SETTINGS = [
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "effective_cache_size",
    "max_wal_size",
    "min_wal_size",
    "checkpoint_timeout",
    "wal_level",
    "wal_compression",
    "synchronous_commit",
    "fsync",
    "full_page_writes",
    "max_parallel_workers_per_gather",
    "max_parallel_maintenance_workers",
    "jit",
]
# d2d's phases in run order (etl.load_run's *_ms columns); others found are added after them.
PHASES = ["list", "archive", "parse", "copy", "merge", "quarantine", "cleanup"]
KINDS = ["d2d", "rerun", "floor", "python", "week", "s3"]


def log(msg: str) -> None:
    print(f"bench-load {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100k, 1M, 10M)")
    return int(float(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6}[m.group(2).lower()])


def size_name(n: int) -> str:
    if n >= 10**6 and n % 10**5 == 0:
        return f"{n / 10**6:g}M"
    if n >= 10**3 and n % 100 == 0:
        return f"{n / 10**3:g}k"
    return str(n)


def size_list(text: str) -> list[int]:
    return [parse_size(s) for s in text.split(",") if s.strip()] if text else []


# --- PostgreSQL ----------------------------------------------------------------------------


def db_url(base: str, name: str) -> str:
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


class Server:
    """The PostgreSQL server of ``DATABASE_URL``: benchmark databases come and go on it."""

    def __init__(self, base_url: str, prefix: str) -> None:
        self.base = base_url
        self.prefix = prefix
        self.created: set[str] = set()

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(db_url(self.base, "postgres"), autocommit=True)

    def create(self, name: str) -> str:
        full = f"{self.prefix}_{name}"
        with self.admin() as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(full))
            )
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(full)))
        self.created.add(full)
        return db_url(self.base, full)

    def drop(self, url: str) -> None:
        full = urllib.parse.urlsplit(url).path.lstrip("/")
        with self.admin() as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(full))
            )
        self.created.discard(full)

    def drop_all(self) -> None:
        for full in list(self.created):
            with contextlib.suppress(psycopg.Error):
                self.drop(db_url(self.base, full))

    def checkpoint(self) -> None:
        with contextlib.suppress(psycopg.Error), self.admin() as c:
            c.execute("CHECKPOINT")

    def settings(self) -> dict:
        with self.admin() as c:
            out = {"version": c.execute("SELECT version()").fetchone()[0]}
            for name in PG_SETTINGS:
                with contextlib.suppress(psycopg.Error):
                    out[name] = c.execute(
                        sql.SQL("SHOW {}").format(sql.Identifier(name))
                    ).fetchone()[0]
            su = c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            out["_superuser"] = bool(su and su[0])
        return out


def last_run(url: str) -> dict:
    with psycopg.connect(url) as c:
        row = c.execute(
            "SELECT to_jsonb(r) FROM etl.load_run AS r ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
    return row[0] if row else {}


def bi_answer(url: str) -> list[dict]:
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT operating_period_id, vehicles, avg_metres"
            " FROM bi.avg_distance_per_operating_period ORDER BY operating_period_id"
        ).fetchall()
    return [{"operating_period_id": p, "vehicles": n, "avg_metres": m} for p, n, m in rows]


# --- running and measuring -----------------------------------------------------------------


def run_measured(cmd: list[str], env: dict, log_path: Path) -> dict:
    """Runs ``cmd``, stdout and stderr to ``log_path``; wall seconds, peak RSS, exit code."""
    with open(log_path, "ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{cmd[0]} exited {code}; log {log_path}:\n{tail}")
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "load": load}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bin = Path(args.bin_dir)
        self.work = Path(tempfile.mkdtemp(prefix="d2d-bench-", dir=args.work_dir))
        os.chmod(self.work, 0o755)  # the server (user postgres) reads the floor's file
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.server = Server(os.environ["DATABASE_URL"], args.db_prefix)
        self.results: list[dict] = []
        self.env = dict(os.environ)
        self.env["D2D_OUTPUT"] = "json"
        self.env.setdefault("RUST_LOG", "info")

    def exe(self, name: str) -> str:
        path = self.bin / name
        if not path.exists():
            raise SystemExit(
                f"bench-load: {path} is missing; build with cargo build --release --examples"
            )
        return str(path)

    def record(self, size: int, row: str, samples: list[dict], **extra) -> dict:
        entry = {"size": size, "row": row, "samples": samples, **extra}
        self.results.append(entry)
        walls = [s["wall"] for s in samples]
        log(
            f"{size_name(size)} {row}: median {statistics.median(walls):.2f} s"
            f" ({min(walls):.2f}-{max(walls):.2f}),"
            f" rss {max(s.get('rss_mb', 0) for s in samples):.0f} MB"
        )
        return entry

    # -- data --

    def make_landing(self, size: int, days: int) -> tuple[Path, list[dt.date], dict]:
        out = self.work / f"landing-{size_name(size)}"
        first = dt.date.fromisoformat(self.args.date)
        source = self.args.source
        gen = self.bin / "generate_fleet"
        if source == "auto":
            source = "gen" if gen.exists() else "sample"
        t0 = time.perf_counter()
        if source == "gen":
            cmd = [
                self.exe("generate_fleet"), "--out", str(out), "--date", first.isoformat(),
                "--days", str(days), "--events", str(size), "--seed", str(self.args.seed),
                *self.args.gen_args.split(),
            ]  # fmt: skip
            run_measured(cmd, self.env, self.logs / f"generate-{size_name(size)}.log")
            dates = [first + dt.timedelta(days=i) for i in range(days)]
            info = {"source": "generate_fleet", "command": " ".join(cmd[1:])}
        else:
            per_copy = self.sample_lines - 2  # the two operating-period lines are not copied
            copies = max(1, round(size / per_copy))
            dates = sample_days.make_days(Path(self.args.sample), out, first, days, copies)
            info = {"source": f"sample ×{copies}", "copies": copies}
        info["seconds"] = time.perf_counter() - t0
        info["events"] = count_day_lines(out, first)
        info["bytes"] = day_bytes(out, first)
        log(
            f"{size_name(size)}: {days} day(s) from {info['source']} in {info['seconds']:.1f} s,"
            f" {info['events']:,} events/day, {info['bytes'] / 1e6:.0f} MB/day"
        )
        return out, dates, info

    # -- d2d --

    def fresh_warehouse(self, tag: str) -> str:
        url = self.server.create(tag)
        env = {**self.env, "DATABASE_URL": url}
        run_measured([self.exe("setup_warehouse")], env, self.logs / f"setup-{tag}.log")
        return url

    def daily_load(self, url: str, landing: str, lake: str, day: dt.date, tag: str) -> dict:
        env = {**self.env, "DATABASE_URL": url}
        cmd = [
            self.exe("daily_load"), "--date", day.isoformat(), "--landing", landing,
            "--lake", lake, "--output", "json",
        ]  # fmt: skip
        self.server.checkpoint()
        sample = run_measured(cmd, env, self.logs / f"daily_load-{tag}.log")
        run = last_run(url)
        if run.get("status") != "succeeded":
            raise RuntimeError(f"daily_load {tag}: load_run says {run}")
        sample["phases"] = {
            k[:-3]: v / 1000 for k, v in run.items() if k.endswith("_ms") and v is not None
        }
        sample["events"] = run.get("lines")
        sample["rows"] = run.get("rows_fact_vehicle_event")
        return sample

    def bench_size(self, size: int) -> None:
        a = self.args
        name = size_name(size)
        repeat = a.repeat if a.repeat else (3 if size <= 2 * 10**6 else 1)
        want = {k: (size in getattr(a, f"{k}_sizes")) for k in KINDS}
        days = 7 if want["week"] else 1
        landing, dates, info = self.make_landing(size, days)
        day = dates[0]
        info["repeat"] = repeat
        self.sizes[size] = info

        # 1. d2d first runs, each on a fresh database and lake; the last one is kept.
        samples, url, lake = [], None, None
        for r in range(repeat):
            if url:
                self.server.drop(url)
                shutil.rmtree(lake, ignore_errors=True)
            url = self.fresh_warehouse(f"d2d_{name}")
            lake = self.work / f"lake-{name}"
            samples.append(self.daily_load(url, str(landing), str(lake), day, f"{name}-first{r}"))
        self.record(size, "d2d", samples)
        answer = bi_answer(url)

        # 2. re-runs on the same database and lake.
        if want["rerun"]:
            samples = [
                self.daily_load(url, str(landing), str(lake), day, f"{name}-rerun{r}")
                for r in range(repeat)
            ]
            self.record(size, "d2d re-run", samples)

        # 3. the floor: the same rows, COPY from a file prepared beforehand.
        if want["floor"]:
            self.floor(url, size, day, repeat)
        self.server.drop(url)
        shutil.rmtree(lake, ignore_errors=True)

        # 4. the pandas baseline.
        if want["python"]:
            self.python(size, landing, day, repeat, answer)

        # 5. seven days into one warehouse.
        if want["week"]:
            url = self.fresh_warehouse(f"week_{name}")
            lake = self.work / f"lake-week-{name}"
            samples = [
                self.daily_load(url, str(landing), str(lake), d, f"{name}-week-day{i + 1}")
                for i, d in enumerate(dates)
            ]
            for i, s in enumerate(samples):
                self.record(size, f"d2d day {i + 1} of 7", [s], week_day=i + 1)
            self.server.drop(url)
            shutil.rmtree(lake, ignore_errors=True)

        # 6. through the S3-compatible server.
        if want["s3"]:
            self.s3(size, landing, day, repeat)
        if not a.keep:
            shutil.rmtree(landing, ignore_errors=True)

    # -- the floor --

    def floor(self, url: str, size: int, day: dt.date, repeat: int) -> None:
        a = self.args
        path = self.work / f"floor-{size_name(size)}.csv"
        t0 = time.perf_counter()
        with psycopg.connect(url) as c, c.cursor() as cur, open(path, "wb") as f:
            query = sql.SQL("COPY (SELECT * FROM {} WHERE landing_day = {}) TO STDOUT (FORMAT csv)")
            with cur.copy(query.format(sql.SQL(a.fact_table), day)) as copy:
                for chunk in copy:
                    f.write(chunk)
        os.chmod(path, 0o644)
        log(
            f"floor file {path.stat().st_size / 1e6:.0f} MB"
            f" prepared in {time.perf_counter() - t0:.1f} s"
        )
        server_side = self.server_side_copy
        tables = [
            ("floor bare", "floor_bare", "(LIKE {})"),
            ("floor indexed", "floor_indexed", "(LIKE {} INCLUDING ALL)"),
        ]
        for row, table, like in tables:
            samples = []
            for _ in range(repeat):
                with psycopg.connect(url, autocommit=True) as c:
                    c.execute(
                        sql.SQL("DROP TABLE IF EXISTS public.{}").format(sql.Identifier(table))
                    )
                    c.execute(
                        sql.SQL("CREATE TABLE public.{} ").format(sql.Identifier(table))
                        + sql.SQL(like).format(sql.SQL(a.fact_table))
                    )
                    self.server.checkpoint()
                    load = os.getloadavg()[0]
                    t0 = time.perf_counter()
                    target = sql.SQL("COPY public.{} FROM ").format(sql.Identifier(table))
                    if server_side:
                        c.execute(target + sql.SQL("{} (FORMAT csv)").format(str(path)))
                    else:
                        with (
                            c.cursor().copy(target + sql.SQL("STDIN (FORMAT csv)")) as copy,
                            open(path, "rb") as f,
                        ):
                            while chunk := f.read(1 << 20):
                                copy.write(chunk)
                    wall = time.perf_counter() - t0
                    rows = c.execute(
                        sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))
                    ).fetchone()[0]
                    c.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(table)))
                samples.append({"wall": wall, "rows": rows, "load": load})
            self.record(size, row, samples, server_side=server_side)
        path.unlink()

    # -- python --

    def python(self, size: int, landing: Path, day: dt.date, repeat: int, answer: list) -> None:
        script = REPO / "benches" / "baseline" / "python_load.py"
        samples, check = [], None
        for r in range(repeat):
            url = self.server.create(f"python_{size_name(size)}")
            log_path = self.logs / f"python-{size_name(size)}-{r}.log"
            cmd = [
                sys.executable,
                str(script),
                "--landing",
                str(landing),
                "--date",
                day.isoformat(),
                "--database-url",
                url,
            ]
            self.server.checkpoint()
            sample = run_measured(cmd, self.env, log_path)
            out = json.loads(log_path.read_text().strip().splitlines()[-1])
            sample["phases"] = out["phases"]
            sample["rows"] = out["fact_vehicle_events"]
            samples.append(sample)
            check = compare_answers(answer, out["periods"])
            self.server.drop(url)
        self.record(size, "python baseline", samples, check=check)

    # -- S3 --

    def s3(self, size: int, landing: Path, day: dt.date, repeat: int) -> None:
        import boto3  # only this step needs it

        if not os.environ.get("D2D_S3_ENDPOINT"):
            log("no D2D_S3_ENDPOINT: skipping the S3 run")
            return
        stamp = f"{os.getpid()}-{int(time.time())}"
        bucket, lake_bucket = f"bench-landing-{stamp}", f"bench-lake-{stamp}"
        s3 = boto3.resource("s3", endpoint_url=os.environ["D2D_S3_ENDPOINT"])
        try:
            run_measured(
                [self.exe("populate_landing"), "--from", str(landing), "--to", f"s3://{bucket}/",
                 "--date", day.isoformat(), "--create-bucket"],
                self.env, self.logs / f"populate-{size_name(size)}.log",
            )  # fmt: skip
            s3.create_bucket(Bucket=lake_bucket)
            samples = []
            for r in range(repeat):
                url = self.fresh_warehouse(f"s3_{size_name(size)}")
                lake = f"s3://{lake_bucket}/run{r}"
                samples.append(
                    self.daily_load(url, f"s3://{bucket}/", lake, day, f"{size_name(size)}-s3-{r}")
                )
                self.server.drop(url)
                s3.Bucket(lake_bucket).objects.filter(Prefix=f"run{r}/").delete()
            self.record(size, "d2d S3", samples)
        finally:
            for b in (bucket, lake_bucket):
                with contextlib.suppress(Exception):
                    s3.Bucket(b).objects.all().delete()
                    s3.Bucket(b).delete()

    def run(self, done_size) -> None:
        """Every size in turn; ``done_size(self)`` after each (the report so far)."""
        a = self.args
        self.sample_lines = sample_days.sample_events(Path(a.sample))
        self.sizes: dict[int, dict] = {}
        self.started = dt.datetime.now(dt.timezone.utc)
        self.pg = self.server.settings()
        self.server_side_copy = a.floor_copy == "server" or (
            a.floor_copy == "auto" and self.pg["_superuser"] and is_local(self.server.base)
        )
        self.machine = machine()
        try:
            for size in a.sizes:
                self.bench_size(size)
                self.finished = dt.datetime.now(dt.timezone.utc)
                self.machine["load_end"] = os.getloadavg()
                done_size(self)
        finally:
            self.server.drop_all()
            if not a.keep:
                shutil.rmtree(self.work, ignore_errors=True)
            else:
                log(f"kept {self.work}")


# --- helpers -------------------------------------------------------------------------------


def is_local(url: str) -> bool:
    return urllib.parse.urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1", None)


def day_files(root: Path, day: dt.date) -> list[Path]:
    prefix = f"{day.isoformat()}-"
    return [p for p in root.rglob(f"{prefix}*-events.*") if p.is_file()]


def count_day_lines(root: Path, day: dt.date) -> int:
    total = 0
    for p in day_files(root, day):
        with open(p, "rb") as f:
            total += sum(1 for line in f if line.strip())
    return total


def day_bytes(root: Path, day: dt.date) -> int:
    return sum(p.stat().st_size for p in day_files(root, day))


def compare_answers(d2d: list[dict], python: list[dict]) -> dict:
    """Per-period vehicles and average metres of both; the largest relative difference."""
    py = {p["operating_period_id"]: p for p in python}
    worst, same_vehicles, rows = 0.0, True, []
    for p in d2d:
        q = py.pop(p["operating_period_id"], None)
        a, b = p["avg_metres"], q and q["avg_metres"]
        if q is None or p["vehicles"] != q["vehicles"] or (a is None) != (b is None):
            same_vehicles = False
        elif a is not None:
            worst = max(worst, abs(a - b) / max(abs(a), 1e-9))
        rows.append((p["operating_period_id"], p["vehicles"], a, q and q["vehicles"], b))
    same_vehicles = same_vehicles and not py
    ok = same_vehicles and worst < 1e-9
    for pid, n1, a, n2, b in rows[:10]:
        log(f"  {pid}: d2d {n1} vehicles {a:.3f} m; python {n2} vehicles {b:.3f} m")
    log(
        f"  python baseline {'agrees with' if ok else 'DIFFERS from'} d2d"
        f" (max rel. diff {worst:.1e})"
    )
    return {"ok": ok, "max_rel_diff": worst, "periods": rows}


def output(cmd: list[str]) -> str:
    """A command's stdout, stripped; empty when it fails."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine() -> dict:
    info = {"nproc": len(os.sched_getaffinity(0)), "kernel": platform.release()}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                info["ram_gib"] = int(line.split()[1]) / 2**20
    info["load_start"] = os.getloadavg()
    git = ["git", "-C", str(REPO)]
    info["commit"] = output([*git, "rev-parse", "--short", "HEAD"])
    info["branch"] = output([*git, "rev-parse", "--abbrev-ref", "HEAD"])
    info["dirty"] = bool(output([*git, "status", "--porcelain", "--untracked-files=no"]))
    info["rustc"] = output(["rustc", "--version"])
    info["python"] = sys.version.split()[0]
    return info


# --- the report ----------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def span(values: list[float], fmt: str = "{:.2f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(med(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def report(bench: Bench) -> str:
    a, m, pg = bench.args, bench.machine, bench.pg
    out = []
    out.append(
        f"Run {bench.started:%Y-%m-%d %H:%M} UTC – {bench.finished:%H:%M} UTC,"
        f" commit `{m['commit']}` ({m['branch']}{', with local changes' if m['dirty'] else ''}),"
        f" `scripts/bench-load {shlex.join(a.argv)}`."
    )
    out.append("")
    out.append(
        f"**Machine:** {m['nproc']} CPUs ({m.get('cpu', '?')}), {m.get('ram_gib', 0):.0f} GiB RAM,"
        f" Linux {m['kernel']}; {m['rustc']}, Python {m['python']}; load average"
        f" {m['load_start'][0]:.1f} at the start, {m['load_end'][0]:.1f} at the end."
    )
    out.append("")
    version = pg["version"].split(" on ")[0]
    settings = ", ".join(f"`{k}` {pg[k]}" for k in PG_SETTINGS if k in pg)
    out.append(f"**PostgreSQL:** {version} on the same machine (127.0.0.1); {settings}.")
    out.append(
        "The floor's COPY reads a CSV file "
        + (
            "on the server (`COPY … FROM 'file'`)."
            if bench.server_side_copy
            else "through the client (`COPY … FROM STDIN`)."
        )
    )
    out.append("")
    for size, info in bench.sizes.items():
        out.extend(size_table(bench, size, info))
    out.extend(aims(bench))
    return "\n".join(out) + "\n"


def size_table(bench: Bench, size: int, info: dict) -> list[str]:
    entries = [e for e in bench.results if e["size"] == size]
    by_row = {e["row"]: e for e in entries}
    events = info["events"]
    repeat = info["repeat"]
    out = [
        f"### {size_name(size)}: {events:,} events a day,"
        f" {info['bytes'] / 1e6:,.0f} MB ({info['source']})",
        "",
        f"Median of {repeat} run{'s' if repeat > 1 else ''} (min–max); the 7-day rows and the"
        " re-run's database are one warehouse each. Events/s = the day's events ÷ wall time"
        " (floor: rows ÷ time). Ratios compare medians; phases (seconds) are medians.",
        "",
    ]
    phase_names = list(PHASES)
    for e in entries:
        for s in e["samples"]:
            for k in s.get("phases", {}):
                if k != "total" and k not in phase_names:
                    phase_names.append(k)
    phase_names = [
        k
        for k in phase_names
        if any(k in s.get("phases", {}) for e in entries for s in e["samples"])
    ]
    floor = by_row.get("floor bare")
    python = by_row.get("python baseline")
    fmed = med([s["wall"] for s in floor["samples"]]) if floor else None
    pmed = med([s["wall"] for s in python["samples"]]) if python else None
    head = [
        "run",
        "wall s",
        "events/s",
        "÷ bare COPY",
        "python ÷ this",
        *phase_names,
        "peak RSS MB",
    ]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    week = [e for e in entries if e.get("week_day")]
    for e in entries:
        if e.get("week_day") not in (None, 1, len(week)):
            continue
        walls = [s["wall"] for s in e["samples"]]
        n = e["samples"][0].get("rows") if e["row"].startswith("floor") else events
        rate = med([n / w for w in walls])
        cells = [
            e["row"],
            span(walls),
            f"{rate / 1000:,.0f} k",
            f"{med(walls) / fmed:.1f}×" if fmed else "–",
            f"{pmed / med(walls):.2f}×" if pmed else "–",
        ]
        for k in phase_names:
            vals = [s["phases"][k] for s in e["samples"] if k in s.get("phases", {})]
            cells.append(f"{med(vals):.1f}" if vals else "–")
        rss = [s["rss_mb"] for s in e["samples"] if "rss_mb" in s]
        cells.append(span(rss, "{:.0f}") if rss else "–")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    if week:
        days = ", ".join(f"{e['samples'][0]['wall']:.1f}" for e in week)
        merges = ", ".join(f"{e['samples'][0].get('phases', {}).get('merge', 0):.1f}" for e in week)
        out.append(
            f"{len(week)}-day warehouse, wall s of days 1–{len(week)}: {days}; merge s: {merges}."
        )
        out.append("")
    if python and python.get("check"):
        c = python["check"]
        verdict = "equal" if c["ok"] else "NOT equal"
        answers = "; ".join(
            f"{pid}: {a:,.1f} m / {b:,.1f} m"
            for pid, _, a, _, b in c["periods"][:4]
            if a is not None and b is not None
        )
        out.append(
            f"Average distance per operating period, d2d / python baseline: {answers}"
            f" ({verdict}: same periods and vehicle counts,"
            f" largest relative difference {c['max_rel_diff']:.1e})."
        )
        out.append("")
    return out


def aims(bench: Bench) -> list[str]:
    """Issue 7's aims against this run's medians."""

    def wall(size: int, row: str) -> float | None:
        for e in bench.results:
            if e["size"] == size and e["row"] == row:
                return med([s["wall"] for s in e["samples"]])
        return None

    def rss(size: int) -> float | None:
        values = [
            s["rss_mb"]
            for e in bench.results
            if e["size"] == size and e["row"].startswith("d2d")
            for s in e["samples"]
        ]
        return max(values) if values else None

    def mark(ok: bool) -> str:
        return "yes" if ok else "**no**"

    out = ["| aim | " + " | ".join(size_name(s) for s in bench.sizes) + " |"]
    out.append("|---|" + "---|" * len(bench.sizes))
    checks = [
        (
            "end to end ≤ 1.5× bare COPY",
            lambda s: (wall(s, "d2d"), wall(s, "floor bare")),
            1.5,
            "×",
        ),
        (
            "≥ 5× the Python baseline",
            lambda s: (wall(s, "python baseline"), wall(s, "d2d")),
            5,
            "×",
        ),
        ("re-run ≤ first run", lambda s: (wall(s, "d2d re-run"), wall(s, "d2d")), 1.0, "×"),
        (
            "day 7 ≤ 1.2× day 1",
            lambda s: (wall(s, "d2d day 7 of 7"), wall(s, "d2d day 1 of 7")),
            1.2,
            "×",
        ),
    ]
    for name, values, limit, unit in checks:
        cells = []
        for size in bench.sizes:
            a, b = values(size)
            if a is None or b is None:
                cells.append("–")
                continue
            ratio = a / b
            ok = ratio >= limit if name.startswith("≥") else ratio <= limit
            cells.append(f"{ratio:.2f}{unit} {mark(ok)}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for size in bench.sizes:
        w = wall(size, "d2d")
        rate = bench.sizes[size]["events"] / w if w else None
        cells.append(f"{rate / 1000:,.0f} k {mark(rate >= 300_000)}" if rate else "–")
    out.append("| ≥ 300 k events/s | " + " | ".join(cells) + " |")
    cells = [f"{r:.0f} MB {mark(r <= 200)}" if (r := rss(s)) else "–" for s in bench.sizes]
    out.append("| peak RSS ≤ 200 MB | " + " | ".join(cells) + " |")
    peaks = [r for s in bench.sizes if (r := rss(s))]
    if len(peaks) > 1:
        flat = max(peaks) / min(peaks)
        out.append(
            "| peak RSS flat within 10 % across sizes | "
            + " | ".join([f"{flat:.2f}× {mark(flat <= 1.1)}"] + [""] * (len(peaks) - 1))
            + " |"
        )
    return ["#### Against the aims", "", *out, ""]


def render(path: Path) -> str:
    """The report of an earlier run, from its --json file."""
    import types

    saved = json.loads(path.read_text())
    run = saved["run"]
    bench = types.SimpleNamespace(
        args=types.SimpleNamespace(argv=run["argv"]),
        machine=saved["machine"],
        pg=saved["postgres"],
        sizes={int(k): v for k, v in saved["sizes"].items()},
        results=saved["results"],
        server_side_copy=run["server_side_copy"],
        started=dt.datetime.fromisoformat(run["started"]),
        finished=dt.datetime.fromisoformat(run["finished"]),
    )
    return report(bench)


SECTION = re.compile(
    r"<!-- bench-load:begin (?P<id>[^>]*?) -->.*?<!-- bench-load:end (?P=id) -->\n?", re.S
)


def write_report(path: Path, section: str, title: str, body: str) -> None:
    begin, end = f"<!-- bench-load:begin {section} -->", f"<!-- bench-load:end {section} -->"
    block = f"{begin}\n## {title}\n\n{body}{end}\n"
    text = path.read_text() if path.exists() else "# Benchmarks: the daily load\n\n"
    for m in SECTION.finditer(text):
        if m.group("id") == section:
            text = text[: m.start()] + block + text[m.end() :]
            break
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scripts/bench-load", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", default="1M,10M", help="events per day, e.g. 100k,1M,10M (default 1M,10M)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="runs per timed command (default 3 up to 2M events, else 1)",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 100k events, one run of each")
    p.add_argument(
        "--out", type=Path, default=REPO / "BENCHMARKS.md", help="the Markdown report to write"
    )
    p.add_argument(
        "--section", default="latest", help="id of the report's section to replace or add"
    )
    p.add_argument("--title", default=None, help="heading of that section")
    p.add_argument("--json", type=Path, help="also write every sample as JSON here")
    p.add_argument("--source", choices=["auto", "gen", "sample"], default="auto",
                   help="days from examples/generate_fleet (gen) or the sample copied K times"
                   " (sample); auto: gen when built")  # fmt: skip
    p.add_argument(
        "--gen-args",
        default="--vehicles 2000",
        help="more arguments for generate_fleet (default: the issue's fleet of 2,000 vehicles,"
        " so files are as dense as a real fleet's: 1 M events = 1,500 files of ~670 lines)",
    )
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--date", default="2019-06-01", help="first landing day")
    p.add_argument(
        "--sample", default=str(REPO / "testdata" / "landing"), help="the sample landing folder"
    )
    for kind, default in [
        ("rerun", "all"),
        ("floor", "all"),
        ("python", "1M"),
        ("week", "all"),
        ("s3", "1M"),
    ]:
        p.add_argument(
            f"--{kind}-sizes",
            default=default,
            help=f"sizes with the {kind} runs ('all', 'none' or a list; default {default})",
        )
    p.add_argument("--floor-copy", choices=["auto", "server", "client"], default="auto")
    p.add_argument(
        "--fact-table", default="dwh.fact_vehicle_event", help="the table the floor imitates"
    )
    p.add_argument("--bin-dir", default=None, help="where the release examples are")
    p.add_argument(
        "--work-dir", default=None, help="parent of the scratch folder (default $TMPDIR)"
    )
    p.add_argument(
        "--db-prefix", default="d2d_bench", help="benchmark databases are <prefix>_<name>"
    )
    p.add_argument("--render", type=Path, help="only write the report again from a --json file")
    p.add_argument(
        "--keep", action="store_true", help="keep the scratch folder (landing days, logs)"
    )
    return p


def main() -> None:
    a = options().parse_args()
    a.argv = sys.argv[1:]
    if a.quick:
        a.sizes = "100k"
        a.repeat = a.repeat or 1
    a.sizes = size_list(a.sizes)
    for kind in KINDS:
        value = getattr(a, f"{kind}_sizes", "all")
        if kind == "d2d":
            continue
        if a.quick and kind in ("python", "s3") and value == "1M":
            value = "all"
        chosen = a.sizes if value == "all" else [] if value == "none" else size_list(value)
        setattr(a, f"{kind}_sizes", set(chosen))
    a.d2d_sizes = set(a.sizes)
    if a.bin_dir is None:
        target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
        a.bin_dir = str(Path(target) / "release" / "examples")
    if a.render:
        write_report(a.out, a.section, a.title or "Results", render(a.render))
        log(f"wrote {a.out} (section {a.section!r}) from {a.render}")
        return
    if "DATABASE_URL" not in os.environ:
        raise SystemExit(
            "bench-load: DATABASE_URL is not set (scripts/bench-load starts the services)"
        )
    bench = Bench(a)

    def write(bench: Bench) -> None:
        body = report(bench)
        title = a.title or f"{bench.started:%Y-%m-%d}, commit {bench.machine['commit']}"
        write_report(a.out, a.section, title, body)
        if a.json:
            everything = {
                "run": {
                    "argv": a.argv,
                    "started": bench.started.isoformat(),
                    "finished": bench.finished.isoformat(),
                    "server_side_copy": bench.server_side_copy,
                },
                "machine": bench.machine,
                "postgres": bench.pg,
                "sizes": {str(k): v for k, v in bench.sizes.items()},
                "results": bench.results,
            }
            a.json.write_text(json.dumps(everything, indent=1, default=str))
        log(f"wrote {a.out} (section {a.section!r}) with {len(bench.sizes)} size(s)")

    bench.run(write)
    print(report(bench))


if __name__ == "__main__":
    main()
