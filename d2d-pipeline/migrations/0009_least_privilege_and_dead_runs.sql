-- d2d warehouse, migration 9: the loader may do what a load needs and no more; a run that dies
-- is recognised as dead and recorded so; the fixes a distance reads are defined once.
--
-- Until now d2d_loader could write every table of staging, dwh and etl: empty the migration
-- ledger (after which no migration run could start again), delete or rewrite runs, file
-- manifests and rejects, and change dwh.distance_rule or dwh.merge_setting by hand. From here
-- on it reads dwh and etl, inserts into staging, and changes dwh and etl only through
-- procedures and functions that run as the owner and check what they are asked to do:
--
--   dwh.begin_day, dwh.merge_day        the load itself (unchanged rules, see migration 8);
--   etl.start_run, etl.run_phase,       a run's own row of etl.load_run, while it is running;
--   etl.record_manifest, etl.finish_run a closed run (succeeded, failed, abandoned) never
--                                       changes again;
--   etl.abandon_dead_runs               closes the runs whose session is gone.
--
-- A running run holds the session-level advisory lock (2032060103, run_id) on the connection
-- that loads (pg_locks: locktype 'advisory', classid 2032060103, objid run_id, objsubid 2).
-- PostgreSQL releases it when that session ends, however the process died, and not before the
-- session's open transaction is over; so a run whose lock is free is dead, and whatever its
-- load transaction did is settled. dwh.merge_day stamps the run's committed_at inside the
-- merge's own transaction: it is set exactly when the load committed.

-- 1. What etl.load_run records of a run that dies.
ALTER TABLE etl.load_run
    ADD COLUMN phase text,
    ADD COLUMN phase_at timestamptz,
    ADD COLUMN committed_at timestamptz,
    DROP CONSTRAINT load_run_status_check,
    ADD CONSTRAINT load_run_status_check
        CHECK (status IN ('running', 'succeeded', 'failed', 'abandoned')),
    ADD CONSTRAINT load_run_abandoned_has_error CHECK (status <> 'abandoned' OR error IS NOT NULL),
    -- A run whose load committed changed the warehouse: it cannot have failed.
    ADD CONSTRAINT load_run_failed_not_committed CHECK (status <> 'failed' OR committed_at IS NULL),
    -- Success is claimed only after a merge in the run's own session stamped it. Runs closed
    -- before this migration have no stamp, hence NOT VALID (closed rows never change).
    ADD CONSTRAINT load_run_succeeded_committed
        CHECK (status <> 'succeeded' OR committed_at IS NOT NULL) NOT VALID;
COMMENT ON COLUMN etl.load_run.phase IS
    'The phase the run was last in (setup, list, archive, load, merge, quarantine, curate, cleanup); NULL on runs before migration 9.';
COMMENT ON COLUMN etl.load_run.committed_at IS
    'When the run''s load transaction stamped it, committing with it: set if and only if its load was committed (NULL on runs before migration 9).';

-- The runs whose lock this session holds (normally none or one).
CREATE FUNCTION etl.session_runs() RETURNS SETOF bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.objid::bigint
      FROM pg_catalog.pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.classid = 2032060103 AND l.objsubid = 2
       AND l.granted AND l.pid = pg_catalog.pg_backend_pid()
$$;

-- 2. A run's life, as the loader may write it.

-- Records a run as running in phase 'setup' and takes its lock on this session; returns its
-- id. The lock is taken before the row commits, so no session ever sees the row unlocked
-- while the run lives. (Run ids beyond 2^31 - 1 would not fit the lock key and fail here.)
CREATE FUNCTION etl.start_run(p_day date, p_from_lake boolean, p_move_landing boolean,
                              p_landing text, p_lake text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_run bigint;
BEGIN
    INSERT INTO etl.load_run (landing_day, from_lake, move_landing, landing, lake, phase, phase_at)
    VALUES (p_day, p_from_lake, p_move_landing, p_landing, p_lake, 'setup', clock_timestamp())
    RETURNING run_id INTO v_run;
    PERFORM pg_advisory_lock(2032060103, v_run::integer);
    RETURN v_run;
END
$$;

-- The phase a live, running run enters. Written from a connection of the run other than the
-- one that loads (that one is inside the load transaction during the load and the merge, where
-- a write would stay invisible, and be rolled back, exactly when it matters), so the check is
-- that the run is alive, not that this session runs it.
CREATE FUNCTION etl.run_phase(p_run bigint, p_phase text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_phase IS NULL OR p_phase = '' THEN
        RAISE EXCEPTION 'etl.run_phase: no phase given for run %', p_run
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Taking the run's lock succeeds only if no other session holds it: the run is dead.
    IF p_run NOT IN (SELECT etl.session_runs()) AND pg_try_advisory_xact_lock(2032060103, p_run::integer) THEN
        RAISE EXCEPTION 'etl.run_phase: run % is not alive (no session holds its lock)', p_run
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    UPDATE etl.load_run AS r SET phase = p_phase, phase_at = clock_timestamp()
     WHERE r.run_id = p_run AND r.status = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'etl.run_phase: run % is not running', p_run
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;

-- The verified archive of a run's files, recorded by the run's own session before its load.
CREATE FUNCTION etl.record_manifest(p_run bigint, p_day date, p_landing_keys text[],
                                    p_lake_keys text[], p_sizes bigint[], p_sha256 text[])
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_rows bigint;
BEGIN
    IF p_run NOT IN (SELECT etl.session_runs()) THEN
        RAISE EXCEPTION 'etl.record_manifest: run % is not run by this session', p_run
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM FROM etl.load_run AS r
      WHERE r.run_id = p_run AND r.status = 'running' AND r.committed_at IS NULL
        AND r.landing_day = p_day;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'etl.record_manifest: run % is not a running, uncommitted run of %', p_run, p_day
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    INSERT INTO etl.file_manifest (run_id, landing_day, landing_key, lake_key, size, sha256)
    SELECT p_run, p_day, m.landing_key, m.lake_key, m.size, m.sha256
      FROM unnest(p_landing_keys, p_lake_keys, p_sizes, p_sha256)
           AS m (landing_key, lake_key, size, sha256);
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    RETURN v_rows;
END
$$;

-- Closes a running run as succeeded or failed, with its counts and times, and releases its
-- lock. Only the run's own session may, or, once that session is gone (a lost connection), a
-- session that can take the lock over.
CREATE FUNCTION etl.finish_run(
    p_run bigint, p_status text,
    p_files bigint, p_bytes bigint, p_lines bigint, p_events bigint, p_duplicates bigint,
    p_rejects bigint,
    p_rows_fact_vehicle_event bigint, p_rows_fact_period_event bigint,
    p_rows_dim_vehicle bigint, p_rows_dim_operating_period bigint,
    p_rows_vehicle_period_distance bigint, p_rows_reject bigint,
    p_list_ms bigint, p_archive_ms bigint, p_parse_ms bigint, p_copy_ms bigint,
    p_merge_ms bigint, p_quarantine_ms bigint, p_cleanup_ms bigint, p_total_ms bigint,
    p_error text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_mine   boolean := p_run IN (SELECT etl.session_runs());
    v_status text;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('succeeded', 'failed') THEN
        RAISE EXCEPTION 'etl.finish_run: a run ends as succeeded or failed, not %', p_status
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT v_mine AND NOT pg_try_advisory_xact_lock(2032060103, p_run::integer) THEN
        RAISE EXCEPTION 'etl.finish_run: run % is running in another session', p_run
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE etl.load_run AS r
       SET status = p_status, files = p_files, bytes = p_bytes, lines = p_lines,
           events = p_events, duplicates = p_duplicates, rejects = p_rejects,
           rows_fact_vehicle_event = p_rows_fact_vehicle_event,
           rows_fact_period_event = p_rows_fact_period_event,
           rows_dim_vehicle = p_rows_dim_vehicle,
           rows_dim_operating_period = p_rows_dim_operating_period,
           rows_vehicle_period_distance = p_rows_vehicle_period_distance,
           rows_reject = p_rows_reject,
           list_ms = p_list_ms, archive_ms = p_archive_ms, parse_ms = p_parse_ms,
           copy_ms = p_copy_ms, merge_ms = p_merge_ms, quarantine_ms = p_quarantine_ms,
           cleanup_ms = p_cleanup_ms, total_ms = p_total_ms,
           error = p_error, finished_at = clock_timestamp()
     WHERE r.run_id = p_run AND r.status = 'running';
    IF NOT FOUND THEN
        SELECT r.status INTO v_status FROM etl.load_run AS r WHERE r.run_id = p_run;
        RAISE EXCEPTION 'etl.finish_run: run % is not running (%)', p_run,
              coalesce('closed as ' || v_status, 'no such run')
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- Last, so that a refused update leaves the run locked, that is alive, until its session
    -- ends.
    IF v_mine THEN
        PERFORM pg_advisory_unlock(2032060103, p_run::integer);
    END IF;
END
$$;

-- Closes every running run whose session is gone as abandoned: when it was noticed
-- (finished_at), the phase it died in (phase, entered at phase_at), and whether its load had
-- committed (committed_at). Returns the runs it closed. Every daily run calls it before it
-- starts, so a dead run stays 'running' only until the next run of any day.
CREATE FUNCTION etl.abandon_dead_runs()
RETURNS TABLE (run_id bigint, landing_day date, phase text, phase_at timestamptz,
               committed_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_run bigint;
BEGIN
    FOR v_run IN SELECT r.run_id FROM etl.load_run AS r WHERE r.status = 'running' ORDER BY r.run_id
    LOOP
        -- A run of this very session is alive; the lock of another live session cannot be
        -- taken. Taken, it is held until this transaction ends, so a run is closed once.
        CONTINUE WHEN v_run IN (SELECT etl.session_runs())
                   OR NOT pg_try_advisory_xact_lock(2032060103, v_run::integer);
        -- The row is re-read under its row lock: a merge that committed while this session
        -- waited has stamped it.
        UPDATE etl.load_run AS r
           SET status = 'abandoned', finished_at = clock_timestamp(),
               error = CASE
                   WHEN r.phase IS NULL THEN
                       'abandoned: its session ended before migration 9, which records phases and commits; whether its load was committed is unknown'
                   WHEN r.committed_at IS NOT NULL THEN
                       format('abandoned after its load was committed: its session ended in phase %s; the load stands, re-run the day to finish', r.phase)
                   ELSE
                       format('abandoned: its session ended in phase %s, before its load was committed; the warehouse is as before the run', r.phase)
               END
         WHERE r.run_id = v_run AND r.status = 'running'
        RETURNING r.run_id, r.landing_day, r.phase, r.phase_at, r.committed_at
             INTO run_id, landing_day, phase, phase_at, committed_at;
        IF FOUND THEN
            RETURN NEXT;
        END IF;
    END LOOP;
END
$$;

-- 3. The merge stamps the run that loads in this session. The merge itself is unchanged: it
-- keeps its body under a new name, which only the owner may call (a loader calling it would
-- load without the stamp).
ALTER PROCEDURE dwh.merge_day(date, double precision, bigint, bigint, bigint, bigint, bigint,
                              bigint, bigint, bigint)
    RENAME TO merge_staged_day;

CREATE PROCEDURE dwh.merge_day(
    p_day date,
    p_max_speed_mps double precision DEFAULT NULL,
    INOUT staged_events bigint DEFAULT NULL,
    INOUT duplicate_events bigint DEFAULT NULL,
    INOUT fact_vehicle_events bigint DEFAULT NULL,
    INOUT fact_period_events bigint DEFAULT NULL,
    INOUT dim_vehicles bigint DEFAULT NULL,
    INOUT dim_operating_periods bigint DEFAULT NULL,
    INOUT distance_rows bigint DEFAULT NULL,
    INOUT reject_rows bigint DEFAULT NULL)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    CALL dwh.merge_staged_day(p_day, p_max_speed_mps, staged_events, duplicate_events,
                              fact_vehicle_events, fact_period_events, dim_vehicles,
                              dim_operating_periods, distance_rows, reject_rows);
    -- In the load transaction: the stamp commits if and only if the load does. Last, so the
    -- run's row stays locked only from here to the commit.
    UPDATE etl.load_run AS r SET committed_at = clock_timestamp()
     WHERE r.run_id IN (SELECT etl.session_runs()) AND r.status = 'running';
END
$$;

-- 4. A day's partition is the loader's to read, not to write. It is built in staging, where
-- the loader may insert (COPY), and keeps those grants when it moves to dwh: reset them.
CREATE OR REPLACE PROCEDURE dwh.swap_day_partition(p_day date)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_part text := dwh.day_partition(p_day);
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS dwh.%I', v_part);
    EXECUTE format('ALTER TABLE staging.vehicle_event RENAME TO %I', v_part);
    EXECUTE format('ALTER TABLE staging.%I SET SCHEMA dwh', v_part);
    EXECUTE format('REVOKE ALL ON dwh.%I FROM d2d_loader', v_part);
    EXECUTE format('GRANT SELECT ON dwh.%I TO d2d_loader', v_part);
    EXECUTE format('ALTER TABLE dwh.fact_vehicle_event ATTACH PARTITION dwh.%I FOR VALUES IN (%L)',
                   v_part, p_day);
    CREATE TABLE staging.vehicle_event
        (LIKE dwh.fact_vehicle_event INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
END
$$;

-- 5. The fixes of each (period, vehicle) pair in pg_temp.distance_pair, keyed by pair_no: the
-- one definition both distance walks read. Fixes come from the partitions dwh.vehicle_day
-- names for the vehicle, through the track index; a fix repeated (in several events or files)
-- counts once. A plain STABLE SQL function (no SET, not SECURITY DEFINER) so the planner
-- inlines it into the calling statement, as if the subquery were written there.
-- A stand-in for the callers' temporary table lets PostgreSQL check the body now.
CREATE TEMP TABLE distance_pair (pair_no bigint, operating_period_id text, vehicle_id text,
                                 start_at timestamptz, finish_at timestamptz) ON COMMIT DROP;
CREATE FUNCTION dwh.distance_pair_fixes()
RETURNS TABLE (pair_no bigint, location_at timestamptz, lat double precision, lng double precision)
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT a.pair_no, x.location_at, x.lat, x.lng
      FROM pg_temp.distance_pair AS a
      JOIN dwh.vehicle_day AS d
        ON d.vehicle_id = a.vehicle_id
       AND d.first_fix_at <= a.finish_at
       AND d.last_fix_at >= a.start_at
     CROSS JOIN LATERAL (
           SELECT e.location_at, e.lat, e.lng
             FROM dwh.fact_vehicle_event AS e
            WHERE e.landing_day = d.landing_day
              AND e.vehicle_id = d.vehicle_id
              AND e.event = 'update'
              AND e.location_at BETWEEN a.start_at AND a.finish_at) AS x
$$;
DROP TABLE pg_temp.distance_pair;

-- Same results as migration 8's: the same fixes per pair (a pair_no names one period and
-- vehicle), walked in the same order.
CREATE OR REPLACE PROCEDURE dwh.compute_pair_distances(p_max_speed_mps double precision,
                                                       INOUT p_rows bigint DEFAULT NULL)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_max_speed_mps IS NULL THEN
        -- Rows reach the aggregate in window order, so each sum adds the legs in time order,
        -- as d2d_model::distance does; the last kept fix is the last fix.
        INSERT INTO dwh.vehicle_period_distance
               (operating_period_id, vehicle_id, fixes, first_at, last_at, metres)
        SELECT p.operating_period_id, p.vehicle_id, t.fixes, t.first_at, t.last_at, t.metres
          FROM (SELECT s.pair_no, count(*) AS fixes, min(s.location_at) AS first_at,
                       max(s.location_at) AS last_at,
                       coalesce(sum(dwh.haversine_m(s.prev_lat, s.prev_lng, s.lat, s.lng)), 0) AS metres
                  FROM (SELECT f.*,
                               lag(f.lat) OVER w AS prev_lat,
                               lag(f.lng) OVER w AS prev_lng
                          FROM dwh.distance_pair_fixes() AS f
                        WINDOW w AS (PARTITION BY f.pair_no ORDER BY f.location_at, f.lat, f.lng)) AS s
                 GROUP BY s.pair_no) AS t
          JOIN pg_temp.distance_pair AS p ON p.pair_no = t.pair_no;
    ELSE
        INSERT INTO dwh.vehicle_period_distance
               (operating_period_id, vehicle_id, fixes, first_at, last_at, metres)
        SELECT p.operating_period_id, p.vehicle_id, (t.walk).kept, t.first_at, (t.walk).last_at,
               (t.walk).metres
          FROM (SELECT f.pair_no, min(f.location_at) AS first_at,
                       dwh.track_walk(f.lat, f.lng, f.location_at, p_max_speed_mps
                                      ORDER BY f.location_at, f.lat, f.lng) AS walk
                  FROM dwh.distance_pair_fixes() AS f
                 GROUP BY f.pair_no) AS t
          JOIN pg_temp.distance_pair AS p ON p.pair_no = t.pair_no;
    END IF;
    GET DIAGNOSTICS p_rows = ROW_COUNT;
END
$$;

-- 6. The loader's rights, from scratch. Reading dwh and etl (the migration ledger included:
-- a run checks for pending migrations) and inserting into staging (COPY) are all it does
-- directly; the rest goes through the routines above, which run as the owner.
REVOKE ALL ON ALL TABLES IN SCHEMA staging, dwh, etl FROM d2d_loader;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA staging, dwh, etl FROM d2d_loader;
GRANT SELECT ON ALL TABLES IN SCHEMA dwh, etl TO d2d_loader;
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA staging TO d2d_loader;

-- Objects of later migrations (migration 7's defaults granted every write).
ALTER DEFAULT PRIVILEGES IN SCHEMA dwh, etl
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON TABLES FROM d2d_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA staging
    REVOKE UPDATE, DELETE, TRUNCATE ON TABLES FROM d2d_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA etl
    REVOKE USAGE, SELECT ON SEQUENCES FROM d2d_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA dwh, etl
    REVOKE EXECUTE ON ROUTINES FROM d2d_loader;

-- Routines: what a run calls, granted by name. Those that write with the caller's rights
-- (or run as the owner) and are not part of a run are the owner's alone; PostgreSQL grants
-- EXECUTE to PUBLIC by default, so that is revoked too. (Pure functions such as
-- dwh.haversine_m stay callable by anyone who may use the schema.)
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA dwh, etl FROM d2d_loader;
REVOKE EXECUTE ON PROCEDURE
    dwh.merge_day(date, double precision, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint),
    dwh.merge_staged_day(date, double precision, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint),
    dwh.refresh_vehicle_period_distance(text[], bigint),
    dwh.compute_pair_distances(double precision, bigint),
    etl.replace_rejects(date, bigint)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    etl.start_run(date, boolean, boolean, text, text),
    etl.run_phase(bigint, text),
    etl.record_manifest(bigint, date, text[], text[], bigint[], text[]),
    etl.finish_run(bigint, text, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint,
                   bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint,
                   bigint, bigint, text),
    etl.abandon_dead_runs()
    FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE
    dwh.begin_day(date),
    dwh.merge_day(date, double precision, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint)
    TO d2d_loader;
GRANT EXECUTE ON FUNCTION
    etl.start_run(date, boolean, boolean, text, text),
    etl.run_phase(bigint, text),
    etl.record_manifest(bigint, date, text[], text[], bigint[], text[]),
    etl.finish_run(bigint, text, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint,
                   bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint,
                   bigint, bigint, text),
    etl.abandon_dead_runs(),
    etl.session_runs(),
    etl.dwh_checksums()
    TO d2d_loader;
