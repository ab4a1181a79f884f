-- d2d warehouse, migration 4: the procedures that merge one landing day from staging.
--
-- A landing day is the unit of loading: dwh.merge_day replaces every fact whose lineage belongs
-- to the day (so files removed from the day's sources disappear, late files appear), refreshes
-- the dimensions of the vehicles and periods the old or new rows name, recomputes the distance
-- rows of every period whose dimension changed or whose window overlaps a replaced fix, replaces
-- the day's rejects in etl.reject, and empties staging. The result depends only on the facts,
-- never on the order or number of loads, so re-running a day leaves dwh unchanged.

-- "Input order" of d2d-model: landing order of the source objects (time in the file name, then
-- key), then line. Rows sort in that order with
--   ORDER BY landing_day, source_time NULLS LAST, source_key, line
-- and the latest event wins with the reverse.

-- Replaces the day's rows of etl.reject with staging.reject.
CREATE PROCEDURE etl.replace_rejects(p_day date, INOUT p_rows bigint DEFAULT NULL)
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM etl.reject AS r WHERE r.landing_day = p_day;
    INSERT INTO etl.reject (landing_day, source_key, line, code, field, reason, raw)
    SELECT p_day, s.source_key, s.line, s.code, s.field, s.reason, s.raw
      FROM staging.reject AS s;
    GET DIAGNOSTICS p_rows = ROW_COUNT;
END
$$;

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
LANGUAGE plpgsql AS $$
#variable_conflict error
DECLARE
    v_vehicles   text[];
    v_periods    text[];
    v_from       timestamptz;
    v_to         timestamptz;
    v_new_from   timestamptz;
    v_new_to     timestamptz;
    v_new        text[];
    v_rule_moved boolean;
    v_affected   text[];
BEGIN
    IF p_day IS NULL THEN
        RAISE EXCEPTION 'dwh.merge_day: p_day is null';
    END IF;
    -- Loads are serialised: staging is shared, and two days may name the same vehicles.
    PERFORM pg_advisory_xact_lock(2032060102);

    UPDATE dwh.distance_rule AS r SET max_speed_mps = p_max_speed_mps
     WHERE r.max_speed_mps IS DISTINCT FROM p_max_speed_mps;
    v_rule_moved := FOUND;

    -- What the day's previous load named: refreshed below even if the new load no longer does.
    SELECT array_agg(DISTINCT e.vehicle_id),
           min(e.location_at) FILTER (WHERE e.event = 'update'),
           max(e.location_at) FILTER (WHERE e.event = 'update')
      INTO v_vehicles, v_from, v_to
      FROM dwh.fact_vehicle_event AS e
     WHERE e.landing_day = p_day;
    SELECT array_agg(DISTINCT e.operating_period_id) INTO v_periods
      FROM dwh.fact_period_event AS e
     WHERE e.landing_day = p_day;

    DELETE FROM dwh.fact_vehicle_event AS e WHERE e.landing_day = p_day;
    DELETE FROM dwh.fact_period_event AS e WHERE e.landing_day = p_day;
    DELETE FROM dwh.vehicle_day AS d WHERE d.landing_day = p_day;

    SELECT (SELECT count(*) FROM staging.vehicle_event) + (SELECT count(*) FROM staging.period_event)
      INTO staged_events;

    -- An event equal to an earlier one of the day (in another file) is kept once, at its first
    -- occurrence, as d2d_model::parse::Parsed::merge does.
    INSERT INTO dwh.fact_vehicle_event
           (landing_day, source_key, line, source_time, event, vehicle_id, organization_id,
            event_at, lat, lng, location_at)
    SELECT p_day, s.source_key, s.line, s.source_time, s.event, s.vehicle_id, s.organization_id,
           s.event_at, s.lat, s.lng, s.location_at
      FROM (SELECT v.*, row_number() OVER (
                        PARTITION BY v.event, v.vehicle_id, v.organization_id, v.event_at,
                                     v.lat, v.lng, v.location_at
                        ORDER BY v.source_time NULLS LAST, v.source_key, v.line) AS occurrence
              FROM staging.vehicle_event AS v) AS s
     WHERE s.occurrence = 1;
    GET DIAGNOSTICS fact_vehicle_events = ROW_COUNT;

    INSERT INTO dwh.fact_period_event
           (landing_day, source_key, line, source_time, event, operating_period_id,
            organization_id, event_at, start_at, finish_at)
    SELECT p_day, s.source_key, s.line, s.source_time, s.event, s.operating_period_id,
           s.organization_id, s.event_at, s.start_at, s.finish_at
      FROM (SELECT v.*, row_number() OVER (
                        PARTITION BY v.event, v.operating_period_id, v.organization_id,
                                     v.event_at, v.start_at, v.finish_at
                        ORDER BY v.source_time NULLS LAST, v.source_key, v.line) AS occurrence
              FROM staging.period_event AS v) AS s
     WHERE s.occurrence = 1;
    GET DIAGNOSTICS fact_period_events = ROW_COUNT;
    duplicate_events := staged_events - fact_vehicle_events - fact_period_events;

    -- Per vehicle and day; the latest event decides the organisation and lifecycle state.
    INSERT INTO dwh.vehicle_day
           (vehicle_id, landing_day, organization_id, events, fixes, first_event_at,
            last_event_at, first_fix_at, last_fix_at, last_registered_at, last_deregistered_at,
            lifecycle_event, lifecycle_at)
    SELECT e.vehicle_id, p_day,
           (array_agg(e.organization_id ORDER BY e.event_at DESC, e.source_time DESC NULLS FIRST,
                                                 e.source_key DESC, e.line DESC))[1],
           count(*),
           count(*) FILTER (WHERE e.event = 'update'),
           min(e.event_at), max(e.event_at),
           min(e.location_at) FILTER (WHERE e.event = 'update'),
           max(e.location_at) FILTER (WHERE e.event = 'update'),
           max(e.event_at) FILTER (WHERE e.event = 'register'),
           max(e.event_at) FILTER (WHERE e.event = 'deregister'),
           (array_agg(e.event ORDER BY e.event_at DESC, e.source_time DESC NULLS FIRST,
                                       e.source_key DESC, e.line DESC)
                FILTER (WHERE e.event <> 'update'))[1],
           max(e.event_at) FILTER (WHERE e.event <> 'update')
      FROM dwh.fact_vehicle_event AS e
     WHERE e.landing_day = p_day
     GROUP BY e.vehicle_id;

    SELECT array_agg(DISTINCT e.vehicle_id),
           min(e.location_at) FILTER (WHERE e.event = 'update'),
           max(e.location_at) FILTER (WHERE e.event = 'update')
      INTO v_new, v_new_from, v_new_to
      FROM dwh.fact_vehicle_event AS e
     WHERE e.landing_day = p_day;
    v_vehicles := coalesce(v_vehicles, '{}') || coalesce(v_new, '{}');
    v_from := least(v_from, v_new_from);
    v_to := greatest(v_to, v_new_to);
    SELECT array_agg(DISTINCT e.operating_period_id) INTO v_new
      FROM dwh.fact_period_event AS e
     WHERE e.landing_day = p_day;
    v_periods := coalesce(v_periods, '{}') || coalesce(v_new, '{}');

    DELETE FROM dwh.dim_vehicle AS d WHERE d.vehicle_id = ANY (v_vehicles);
    INSERT INTO dwh.dim_vehicle
           (vehicle_id, organization_id, status, first_event_at, last_event_at, events, fixes,
            first_fix_at, last_fix_at, last_registered_at, last_deregistered_at,
            first_landing_day, last_landing_day)
    SELECT d.vehicle_id,
           (array_agg(d.organization_id ORDER BY d.last_event_at DESC, d.landing_day DESC))[1],
           CASE (array_agg(d.lifecycle_event ORDER BY d.lifecycle_at DESC, d.landing_day DESC)
                     FILTER (WHERE d.lifecycle_event IS NOT NULL))[1]
               WHEN 'register' THEN 'registered'
               WHEN 'deregister' THEN 'deregistered'
               ELSE 'unknown'
           END,
           min(d.first_event_at), max(d.last_event_at),
           sum(d.events)::bigint, sum(d.fixes)::bigint,
           min(d.first_fix_at), max(d.last_fix_at),
           max(d.last_registered_at), max(d.last_deregistered_at),
           min(d.landing_day), max(d.landing_day)
      FROM dwh.vehicle_day AS d
     WHERE d.vehicle_id = ANY (v_vehicles)
     GROUP BY d.vehicle_id;
    GET DIAGNOSTICS dim_vehicles = ROW_COUNT;

    -- d2d_model::period::resolve_periods: the latest event by envelope `at` (on a tie, the later
    -- in input order) decides the window and whether the period is deleted; a create after a
    -- delete restores it.
    DELETE FROM dwh.dim_operating_period AS p WHERE p.operating_period_id = ANY (v_periods);
    INSERT INTO dwh.dim_operating_period
           (operating_period_id, organization_id, start_at, finish_at, deleted, updated_at,
            events, source_landing_day, source_key, source_line)
    SELECT DISTINCT ON (e.operating_period_id)
           e.operating_period_id, e.organization_id, e.start_at, e.finish_at,
           e.event = 'delete', e.event_at,
           count(*) OVER (PARTITION BY e.operating_period_id),
           e.landing_day, e.source_key, e.line
      FROM dwh.fact_period_event AS e
     WHERE e.operating_period_id = ANY (v_periods)
     ORDER BY e.operating_period_id, e.event_at DESC, e.landing_day DESC,
              e.source_time DESC NULLS FIRST, e.source_key DESC, e.line DESC;
    GET DIAGNOSTICS dim_operating_periods = ROW_COUNT;

    IF v_rule_moved THEN
        v_affected := NULL;
    ELSE
        SELECT coalesce(array_agg(p.operating_period_id), '{}') INTO v_affected
          FROM dwh.dim_operating_period AS p
         WHERE NOT p.deleted AND p.start_at <= v_to AND p.finish_at >= v_from;
        v_affected := v_affected || v_periods;
    END IF;
    CALL dwh.refresh_vehicle_period_distance(v_affected, distance_rows);

    CALL etl.replace_rejects(p_day, reject_rows);

    TRUNCATE staging.vehicle_event, staging.period_event, staging.reject;
END
$$;

-- A fingerprint of every dwh table: row count and the md5 of all rows' text, sorted. Equal
-- fingerprints mean equal tables, row for row; the loader's idempotency is checked with it.
CREATE FUNCTION etl.dwh_checksums()
RETURNS TABLE (table_name text, row_count bigint, md5 text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_table text;
BEGIN
    FOR v_table IN
        SELECT c.relname FROM pg_catalog.pg_class AS c
          JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = 'dwh' AND c.relkind = 'r'
         ORDER BY c.relname COLLATE "C"
    LOOP
        table_name := v_table;
        EXECUTE format(
            'SELECT count(*), md5(coalesce(string_agg(t::text, E''\n'' ORDER BY t::text COLLATE "C"), '''')) FROM dwh.%I AS t',
            v_table)
           INTO row_count, md5;
        RETURN NEXT;
    END LOOP;
END
$$;
