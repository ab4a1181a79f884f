"""Baseline: one landing day into PostgreSQL the way the d2d challenge's public solutions do it.

    python benches/baseline/python_load.py --landing DIR --date 2019-06-01 --database-url URL

Written as those solutions are (pandas + psycopg + SQL), but carefully, so that it is a fair
yardstick for ``daily_load`` and not a straw man:

1. **extract**: every landing file of the day (by the date in its name, any folder below
   ``--landing``), one at a time: ``pandas.read_json(path, lines=True)``, then
   ``pandas.json_normalize`` of its records, split into vehicle and operating-period rows;
2. **copy**: each file's rows go straight into two staging tables with psycopg 3's ``COPY``
   (CSV text), inside one transaction, so memory holds one file at a time;
3. **merge**: one SQL script in the same transaction: distinct vehicle events into the fact
   table (a re-run replaces the day), the latest event of each operating period into the
   period table, then every (period, vehicle) distance recomputed with a window function:
   ``lag()`` over the vehicle's de-duplicated fixes inside the period, ordered by time, and an
   inline haversine (R = 6,371,008.8 m), as d2d defines it.

It does not archive files, keep rejects or lineage, or record the run: it loads what d2d loads
into ``dwh`` for this question, and answers it. A line that does not parse fails the run
(pandas raises). It is single-process, as those solutions are.

It prints one JSON object on its last stdout line: seconds per phase, rows, and the average
distance per operating period (``bi.avg_distance_per_operating_period``'s question), so the
bench driver can check it against d2d.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import time
from pathlib import Path

import pandas as pd
import psycopg
from psycopg import sql

NAME = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})-(\d{1,2})-(\d{1,2})-(\d{1,2})-events\.\w+")

VEHICLE_COLUMNS = {
    "event": "event",
    "data.id": "vehicle_id",
    "organization_id": "organization_id",
    "at": "event_at",
    "data.location.lat": "lat",
    "data.location.lng": "lng",
    "data.location.at": "location_at",
}
PERIOD_COLUMNS = {
    "event": "event",
    "data.id": "operating_period_id",
    "organization_id": "organization_id",
    "at": "event_at",
    "data.start": "start_at",
    "data.finish": "finish_at",
}

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS py;
CREATE UNLOGGED TABLE IF NOT EXISTS py.staging_vehicle_event (
    event text, vehicle_id text, organization_id text, event_at timestamptz,
    lat double precision, lng double precision, location_at timestamptz);
CREATE UNLOGGED TABLE IF NOT EXISTS py.staging_period_event (
    event text, operating_period_id text, organization_id text, event_at timestamptz,
    start_at timestamptz, finish_at timestamptz);
CREATE TABLE IF NOT EXISTS py.vehicle_event (
    landing_day date NOT NULL, event text NOT NULL, vehicle_id text NOT NULL,
    organization_id text NOT NULL, event_at timestamptz NOT NULL,
    lat double precision, lng double precision, location_at timestamptz);
CREATE INDEX IF NOT EXISTS vehicle_event_day ON py.vehicle_event (landing_day);
CREATE TABLE IF NOT EXISTS py.period_event (
    landing_day date NOT NULL, event text NOT NULL, operating_period_id text NOT NULL,
    organization_id text NOT NULL, event_at timestamptz NOT NULL,
    start_at timestamptz NOT NULL, finish_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS py.operating_period (
    operating_period_id text PRIMARY KEY, start_at timestamptz NOT NULL,
    finish_at timestamptz NOT NULL, deleted boolean NOT NULL);
CREATE TABLE IF NOT EXISTS py.vehicle_period_distance (
    operating_period_id text NOT NULL, vehicle_id text NOT NULL, fixes bigint NOT NULL,
    metres double precision NOT NULL, PRIMARY KEY (operating_period_id, vehicle_id));
"""

MERGE = """
DELETE FROM py.vehicle_event WHERE landing_day = {day};
INSERT INTO py.vehicle_event
SELECT DISTINCT {day}::date, event, vehicle_id, organization_id, event_at, lat, lng, location_at
  FROM py.staging_vehicle_event;

DELETE FROM py.period_event WHERE landing_day = {day};
INSERT INTO py.period_event
SELECT DISTINCT {day}::date, event, operating_period_id, organization_id, event_at,
       start_at, finish_at
  FROM py.staging_period_event;

-- The latest event of a period decides its window and whether it is deleted.
TRUNCATE py.operating_period;
INSERT INTO py.operating_period
SELECT DISTINCT ON (operating_period_id) operating_period_id, start_at, finish_at,
       event = 'delete'
  FROM py.period_event
 ORDER BY operating_period_id, event_at DESC;

TRUNCATE py.vehicle_period_distance;
INSERT INTO py.vehicle_period_distance
WITH fixes AS (
    SELECT DISTINCT p.operating_period_id, e.vehicle_id, e.location_at, e.lat, e.lng
      FROM py.operating_period AS p
      JOIN py.vehicle_event AS e
        ON e.event = 'update' AND e.location_at BETWEEN p.start_at AND p.finish_at
     WHERE NOT p.deleted
), steps AS (
    SELECT operating_period_id, vehicle_id, lat, lng,
           lag(lat) OVER w AS prev_lat, lag(lng) OVER w AS prev_lng
      FROM fixes
    WINDOW w AS (PARTITION BY operating_period_id, vehicle_id ORDER BY location_at, lat, lng)
)
SELECT operating_period_id, vehicle_id, count(*),
       coalesce(sum(6371008.8 * 2 * asin(sqrt(
           sin(radians(lat - prev_lat) / 2) ^ 2
           + cos(radians(prev_lat)) * cos(radians(lat)) * sin(radians(lng - prev_lng) / 2) ^ 2))),
           0)
  FROM steps
 GROUP BY operating_period_id, vehicle_id;

TRUNCATE py.staging_vehicle_event, py.staging_period_event;
"""

ANSWER = """
SELECT p.operating_period_id, count(d.vehicle_id) AS vehicles, avg(d.metres) AS avg_metres
  FROM py.operating_period AS p
  LEFT JOIN py.vehicle_period_distance AS d USING (operating_period_id)
 WHERE NOT p.deleted
 GROUP BY p.operating_period_id
 ORDER BY p.operating_period_id
"""


def day_files(landing: Path, day: str) -> list[Path]:
    """The landing files of ``day`` (the date in their names), in file-name time order."""
    want = tuple(int(x) for x in day.split("-"))
    found = []
    for path in landing.rglob("*-events.*"):
        m = NAME.fullmatch(path.name)
        if m and tuple(int(g) for g in m.groups()[:3]) == want:
            found.append((tuple(int(g) for g in m.groups()), str(path), path))
    return [p for *_, p in sorted(found)]


def read_file(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One landing file as (vehicle rows, period rows), columns named as the staging tables."""
    raw = pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    flat = pd.json_normalize(raw.to_dict(orient="records"))
    vehicles = flat[flat["on"] == "vehicle"].reindex(columns=list(VEHICLE_COLUMNS))
    periods = flat[flat["on"] == "operating_period"].reindex(columns=list(PERIOD_COLUMNS))
    return vehicles.rename(columns=VEHICLE_COLUMNS), periods.rename(columns=PERIOD_COLUMNS)


def copy_frame(cur: psycopg.Cursor, table: str, frame: pd.DataFrame) -> None:
    if frame.empty:
        return
    buf = io.StringIO()
    frame.to_csv(buf, header=False, index=False)
    with cur.copy(f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(buf.getvalue())


def load(landing: Path, day: str, database_url: str) -> dict:
    phases = {"list": 0.0, "parse": 0.0, "copy": 0.0, "merge": 0.0}
    started = time.perf_counter()
    files = day_files(landing, day)
    if not files:
        raise SystemExit(f"python_load: no landing file of {day} under {landing}")
    phases["list"] = time.perf_counter() - started
    rows = {"vehicle": 0, "period": 0}
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(SCHEMA)
        cur.execute("TRUNCATE py.staging_vehicle_event, py.staging_period_event")
        for path in files:
            t0 = time.perf_counter()
            vehicles, periods = read_file(path)
            t1 = time.perf_counter()
            copy_frame(cur, "py.staging_vehicle_event", vehicles)
            copy_frame(cur, "py.staging_period_event", periods)
            phases["parse"] += t1 - t0
            phases["copy"] += time.perf_counter() - t1
            rows["vehicle"] += len(vehicles)
            rows["period"] += len(periods)
        t0 = time.perf_counter()
        # One script, so one round trip (the simple query protocol allows no parameters).
        cur.execute(sql.SQL(MERGE).format(day=sql.Literal(day)))
        conn.commit()
        phases["merge"] = time.perf_counter() - t0
        cur.execute("SELECT count(*) FROM py.vehicle_event WHERE landing_day = %s", (day,))
        (facts,) = cur.fetchone()
        cur.execute(ANSWER)
        periods_answer = [
            {"operating_period_id": p, "vehicles": n, "avg_metres": m} for p, n, m in cur
        ]
    return {
        "files": len(files),
        "staged_rows": rows,
        "fact_vehicle_events": facts,
        "phases": phases,
        "seconds": time.perf_counter() - started,
        "periods": periods_answer,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--landing", type=Path, required=True, help="landing folder")
    parser.add_argument("--date", required=True, help="landing day, YYYY-MM-DD")
    parser.add_argument("--database-url", required=True, help="PostgreSQL URL")
    args = parser.parse_args()
    result = load(args.landing, args.date, args.database_url)
    for p in result["periods"]:
        avg = "-" if p["avg_metres"] is None else f"{p['avg_metres']:.1f}"
        print(f"  {p['operating_period_id']:<24} {p['vehicles']:>9} {avg:>14}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
