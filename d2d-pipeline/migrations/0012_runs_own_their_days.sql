-- d2d warehouse, migration 12: what the loader changes, it changes inside a run of that day.
--
-- Until now the loader role could, by hand, empty a day and merge it without any run record
-- (`CALL dwh.begin_day(d); CALL dwh.merge_day(d)`), or merge day d inside a run started for
-- another day; any loader session could write any text as another live run's phase; and a
-- BC date loaded the partition of the AD day with the same digits (`to_char(d, 'YYYYMMDD')`
-- drops the era), emptying a real day. From here on:
--
--   days                 etl.start_run and dwh.begin_day take 0001-01-01 .. 9999-12-31 only;
--   dwh.begin_day,       need, for any session but the warehouse owner's, a running run of
--   dwh.merge_day        that very day held by this session whose load has not committed;
--   dwh.apply_distances  needs, in this same transaction, that run's merge or a distance
--                        refresh, and every refresh is recorded in etl.distance_refresh;
--   etl.run_phase        needs the run's key (etl.run_key, readable by the run's own session
--                        only) and takes one of the phases d2d has.
--
-- The owner (the role migrations run as, and its members) keeps the low-level calls without a
-- run: it may rewrite every table anyway, and the tests and repairs use them.

-- 1. Days d2d loads: four-digit years of the common era, as the feed and the lake write them.
CREATE FUNCTION dwh.check_day(p_day date, p_caller text) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_day IS NULL THEN
        RAISE EXCEPTION '%: no day given', p_caller USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_day < date '0001-01-01' OR p_day > date '9999-12-31' THEN
        RAISE EXCEPTION '%: % is outside the days d2d loads (0001-01-01 to 9999-12-31)', p_caller, p_day
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- 2. Who may touch a day.

-- Whether this session's login role is the warehouse owner or one of its members (in a
-- SECURITY DEFINER function, current_user is that owner).
CREATE FUNCTION etl.session_is_owner() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.pg_has_role(session_user, current_user, 'MEMBER')
$$;

-- Refuses unless this session holds a running, uncommitted run of p_day (or is the owner's).
CREATE FUNCTION etl.require_run_of(p_day date, p_caller text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF etl.session_is_owner() THEN
        RETURN;
    END IF;
    PERFORM FROM etl.load_run AS r
      WHERE r.run_id IN (SELECT etl.session_runs())
        AND r.status = 'running' AND r.committed_at IS NULL AND r.landing_day = p_day;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: this session holds no running, uncommitted run of % (a load starts with etl.start_run for its day)', p_caller, p_day
              USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION etl.start_run(p_day date, p_from_lake boolean, p_move_landing boolean,
                                         p_landing text, p_lake text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_run bigint;
BEGIN
    PERFORM dwh.check_day(p_day, 'etl.start_run');
    INSERT INTO etl.load_run (landing_day, from_lake, move_landing, landing, lake, phase, phase_at)
    VALUES (p_day, p_from_lake, p_move_landing, p_landing, p_lake, 'setup', clock_timestamp())
    RETURNING run_id INTO v_run;
    PERFORM pg_advisory_lock(2032060103, v_run::integer);
    RETURN v_run;
END
$$;

-- 3. The load: begin and merge, each for the run's own day.

-- Which transaction may apply distances, and for what: written by dwh.merge_day and
-- dwh.begin_distance_refresh, consumed by dwh.apply_distances. A row of a transaction that
-- rolls back vanishes with it; the loader can neither write nor read it.
CREATE UNLOGGED TABLE staging.distance_permit (
    xact       xid8 PRIMARY KEY,
    refresh_id bigint
);
REVOKE ALL ON staging.distance_permit FROM d2d_loader;

-- Every refresh of the distances: who asked, under which rule, and what it wrote.
CREATE TABLE etl.distance_refresh (
    refresh_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    role          name NOT NULL,
    max_speed_mps double precision,
    started_at    timestamptz NOT NULL,
    applied_at    timestamptz,
    rows          bigint
);
COMMENT ON TABLE etl.distance_refresh IS
    'One row per distance refresh (daily_load --refresh-distances); applied_at and rows are set when its distances were applied, in the same transaction.';
REVOKE ALL ON etl.distance_refresh FROM d2d_loader;
GRANT SELECT ON etl.distance_refresh TO d2d_loader;

CREATE OR REPLACE PROCEDURE dwh.begin_day(p_day date)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM dwh.check_day(p_day, 'dwh.begin_day');
    PERFORM etl.require_run_of(p_day, 'dwh.begin_day');
    -- Loads are serialised: staging is shared, and two days may name the same vehicles.
    PERFORM pg_advisory_xact_lock(2032060102);
    TRUNCATE staging.vehicle_event, staging.duplicate_candidate, staging.vehicle_day,
             staging.period_event, staging.reject, staging.distance_pair,
             staging.distance_order, staging.vehicle_period_distance, staging.dropped_event,
             staging.distance_permit;
    ALTER TABLE staging.vehicle_event DROP CONSTRAINT IF EXISTS vehicle_event_landing_day;
    EXECUTE format('ALTER TABLE staging.vehicle_event ADD CONSTRAINT vehicle_event_landing_day CHECK (landing_day = %L)',
                   p_day);
END
$$;

CREATE OR REPLACE PROCEDURE dwh.merge_day(
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
    PERFORM dwh.check_day(p_day, 'dwh.merge_day');
    PERFORM etl.require_run_of(p_day, 'dwh.merge_day');
    CALL dwh.merge_staged_day(p_day, p_max_speed_mps, staged_events, duplicate_events,
                              fact_vehicle_events, fact_period_events, dim_vehicles,
                              dim_operating_periods, distance_rows, reject_rows);
    INSERT INTO staging.distance_permit (xact) VALUES (pg_catalog.pg_current_xact_id())
        ON CONFLICT (xact) DO NOTHING;
    -- In the load transaction: the stamp commits if and only if the load does. Last, so the
    -- run's row stays locked only from here to the commit.
    UPDATE etl.load_run AS r SET committed_at = clock_timestamp()
     WHERE r.run_id IN (SELECT etl.session_runs()) AND r.status = 'running';
END
$$;

-- 4. Distances are applied only where a merge or a recorded refresh asked for them.
CREATE OR REPLACE PROCEDURE dwh.begin_distance_refresh(p_max_speed_mps double precision)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_refresh bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(2032060102);
    INSERT INTO etl.distance_refresh (role, max_speed_mps, started_at)
    VALUES (session_user, p_max_speed_mps, clock_timestamp())
    RETURNING refresh_id INTO v_refresh;
    UPDATE dwh.distance_rule AS r SET max_speed_mps = p_max_speed_mps
     WHERE r.max_speed_mps IS DISTINCT FROM p_max_speed_mps;
    CALL dwh.stage_all_distance_pairs();
    INSERT INTO staging.distance_permit (xact, refresh_id)
    VALUES (pg_catalog.pg_current_xact_id(), v_refresh)
        ON CONFLICT (xact) DO UPDATE SET refresh_id = EXCLUDED.refresh_id;
END
$$;

CREATE OR REPLACE PROCEDURE dwh.apply_distances(INOUT p_rows bigint DEFAULT NULL)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_stray   text;
    v_permit  boolean;
    v_refresh bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(2032060102);
    SELECT true, p.refresh_id INTO v_permit, v_refresh
      FROM staging.distance_permit AS p WHERE p.xact = pg_catalog.pg_current_xact_id();
    IF v_permit IS NULL AND NOT etl.session_is_owner() THEN
        RAISE EXCEPTION 'dwh.apply_distances: no merge of a run and no distance refresh in this transaction asked for distances'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT format('(%s, %s)', s.operating_period_id, s.vehicle_id) INTO v_stray
      FROM staging.vehicle_period_distance AS s
     WHERE NOT EXISTS (SELECT FROM staging.distance_pair AS a
                        WHERE a.operating_period_id = s.operating_period_id
                          AND a.vehicle_id = s.vehicle_id)
     LIMIT 1;
    IF v_stray IS NOT NULL THEN
        RAISE EXCEPTION 'dwh.apply_distances: the distance of % was not asked for', v_stray;
    END IF;
    INSERT INTO dwh.vehicle_period_distance
           (operating_period_id, vehicle_id, fixes, first_at, last_at, metres)
    SELECT s.operating_period_id, s.vehicle_id, s.fixes, s.first_at, s.last_at, s.metres
      FROM staging.vehicle_period_distance AS s;
    GET DIAGNOSTICS p_rows = ROW_COUNT;
    IF v_refresh IS NOT NULL THEN
        UPDATE etl.distance_refresh AS r SET applied_at = clock_timestamp(), rows = p_rows
         WHERE r.refresh_id = v_refresh;
    END IF;
    TRUNCATE staging.distance_pair, staging.distance_order, staging.vehicle_period_distance,
             staging.dropped_event, staging.distance_permit;
END
$$;

-- 5. A run's phase, written by its second connection with the run's key.
CREATE TABLE etl.run_key (
    run_id bigint PRIMARY KEY REFERENCES etl.load_run (run_id),
    key    uuid NOT NULL DEFAULT gen_random_uuid()
);
COMMENT ON TABLE etl.run_key IS
    'The secret of each run that its phase writes must show (etl.run_phase); only the run''s own session reads it (etl.run_key()).';
REVOKE ALL ON etl.run_key FROM d2d_loader, d2d_bi;

-- The run's key, to the session that holds the run only.
CREATE FUNCTION etl.run_key(p_run bigint) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_key uuid;
BEGIN
    IF p_run IS NULL OR p_run NOT IN (SELECT etl.session_runs()) THEN
        RAISE EXCEPTION 'etl.run_key: run % is not run by this session', p_run
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO etl.run_key AS k (run_id) VALUES (p_run) ON CONFLICT (run_id) DO NOTHING;
    SELECT k.key INTO v_key FROM etl.run_key AS k WHERE k.run_id = p_run;
    RETURN v_key;
END
$$;

DROP FUNCTION etl.run_phase(bigint, text);
CREATE FUNCTION etl.run_phase(p_run bigint, p_key uuid, p_phase text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_phase IS NULL OR p_phase NOT IN ('setup', 'list', 'archive', 'load', 'merge',
                                          'quarantine', 'curate', 'cleanup') THEN
        RAISE EXCEPTION 'etl.run_phase: % is not a phase of a run', coalesce(quote_literal(p_phase), 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM FROM etl.run_key AS k WHERE k.run_id = p_run AND k.key = p_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'etl.run_phase: wrong or missing key for run %', p_run
              USING ERRCODE = 'insufficient_privilege';
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

-- 6. Rights: the helpers are the owner's; the loader calls what a run calls.
REVOKE EXECUTE ON FUNCTION dwh.check_day(date, text), etl.session_is_owner(),
    etl.require_run_of(date, text), etl.run_key(bigint), etl.run_phase(bigint, uuid, text)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dwh.check_day(date, text), etl.session_is_owner(),
    etl.require_run_of(date, text)
    FROM d2d_loader;
GRANT EXECUTE ON FUNCTION etl.run_key(bigint), etl.run_phase(bigint, uuid, text) TO d2d_loader;
