-- d2d warehouse, migration 11: one distance implementation, d2d_model's, computed by the loader.
--
-- Until now the warehouse computed distances in PL/pgSQL (dwh.haversine_m, dwh.track_walk,
-- dwh.compute_pair_distances), a second implementation of d2d_model::distance. It agreed to the
-- bit on the data seen, but nothing held it to that, and PostgreSQL's float8 arithmetic raises
-- "value out of range: underflow" where IEEE-754 gives 0 (a fix at lat 1e-160 after one at
-- 0.0), failing a whole day the model accepts, on every re-run.
--
-- From here on the merge only says which (period, vehicle) pairs a load changes
-- (staging.distance_pair) and deletes their rows. The loader computes them with
-- d2d_model::distance::window_distance: the day's own fixes from what it spilled to local disk
-- while parsing (the day is not read back), the other days' fixes of those pairs through the
-- track index (dwh.distance_pair_fixes, which skips the day being loaded), and COPYs the rows
-- into staging.vehicle_period_distance; dwh.apply_distances moves them into dwh in the same
-- transaction. A new distance rule, or a repair, recomputes every pair through the same path
-- (`daily_load --refresh-distances`, dwh.begin_distance_refresh).
--
-- The PL/pgSQL distance functions are dropped: there is one implementation left.
--
-- The merge also records the vehicle events it drops as duplicates (staging.dropped_event), so
-- the loader can write the curated zone's vehicle-event file from the rows it spilled while
-- parsing, exactly as the day's partition holds them, instead of reading the day back.

-- The pairs a load (or a refresh) recomputes, as the merge chose them.
CREATE UNLOGGED TABLE staging.distance_pair (
    operating_period_id text COLLATE "C" NOT NULL,
    vehicle_id          text COLLATE "C" NOT NULL,
    start_at            timestamptz NOT NULL,
    finish_at           timestamptz NOT NULL,
    PRIMARY KEY (operating_period_id, vehicle_id)
);
COMMENT ON TABLE staging.distance_pair IS
    'The (period, vehicle) pairs whose distances the load in progress recomputes; written by dwh.merge_day or dwh.begin_distance_refresh.';

-- The same pairs numbered in the order the loader walks them (its spill buckets), so the
-- other days' fixes stream to it in that order.
CREATE UNLOGGED TABLE staging.distance_order (
    pair_no             bigint PRIMARY KEY,
    operating_period_id text COLLATE "C" NOT NULL,
    vehicle_id          text COLLATE "C" NOT NULL,
    start_at            timestamptz NOT NULL,
    finish_at           timestamptz NOT NULL
);
COMMENT ON TABLE staging.distance_order IS
    'staging.distance_pair numbered by the loader in the order it computes them.';

-- The staged vehicle events the merge dropped as repeats of earlier ones: the loader leaves
-- them out of what it writes to the curated zone from its own copy of the day's rows.
CREATE UNLOGGED TABLE staging.dropped_event (
    source_key text COLLATE "C" NOT NULL,
    line       bigint NOT NULL
);
COMMENT ON TABLE staging.dropped_event IS
    'Vehicle events of the load in progress that the merge dropped as duplicates (source_key, line).';

-- The loader's results, moved into dwh by dwh.apply_distances.
CREATE UNLOGGED TABLE staging.vehicle_period_distance (LIKE dwh.vehicle_period_distance INCLUDING CONSTRAINTS);
COMMENT ON TABLE staging.vehicle_period_distance IS
    'Distances the loader computed with d2d_model::distance for staging.distance_pair.';

GRANT SELECT, INSERT ON staging.distance_pair, staging.distance_order,
    staging.vehicle_period_distance, staging.dropped_event TO d2d_loader;
REVOKE INSERT ON staging.distance_pair, staging.dropped_event FROM d2d_loader;

-- The pairs of every live period and every vehicle with fixes in its window, and no
-- distance rows left: what a new rule or a refresh recomputes.
CREATE PROCEDURE dwh.stage_all_distance_pairs()
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    TRUNCATE staging.distance_pair, staging.distance_order, staging.vehicle_period_distance;
    INSERT INTO staging.distance_pair (operating_period_id, vehicle_id, start_at, finish_at)
    SELECT DISTINCT p.operating_period_id, d.vehicle_id, p.start_at, p.finish_at
      FROM dwh.dim_operating_period AS p
      JOIN dwh.vehicle_day AS d
        ON d.first_fix_at <= p.finish_at AND d.last_fix_at >= p.start_at
     WHERE NOT p.deleted;
    DELETE FROM dwh.vehicle_period_distance;
END
$$;

-- A refresh of every distance under the rule p_max_speed_mps, without loading a day: the
-- load lock, the rule, and every pair staged. The loader then computes and applies them.
CREATE PROCEDURE dwh.begin_distance_refresh(p_max_speed_mps double precision)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(2032060102);
    UPDATE dwh.distance_rule AS r SET max_speed_mps = p_max_speed_mps
     WHERE r.max_speed_mps IS DISTINCT FROM p_max_speed_mps;
    CALL dwh.stage_all_distance_pairs();
END
$$;

-- Statistics of the loader's numbering, so that dwh.distance_pair_fixes is planned as a
-- nested loop over the track index rather than by guesses about an unanalysed table.
CREATE PROCEDURE dwh.analyze_distance_order()
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    ANALYZE staging.distance_order;
END
$$;

-- The fixes of each numbered pair from every landing day but p_skip_day (the day being
-- loaded, whose fixes the loader has), through the track index. Not de-duplicated here: the
-- loader does it, as d2d_model does.
DROP FUNCTION dwh.distance_pair_fixes();
CREATE FUNCTION dwh.distance_pair_fixes(p_skip_day date)
RETURNS TABLE (pair_no bigint, location_at timestamptz, lat double precision, lng double precision)
LANGUAGE sql STABLE AS $$
    SELECT a.pair_no, x.location_at, x.lat, x.lng
      FROM staging.distance_order AS a
      JOIN dwh.vehicle_day AS d
        ON d.vehicle_id = a.vehicle_id
       AND d.first_fix_at <= a.finish_at
       AND d.last_fix_at >= a.start_at
       AND d.landing_day IS DISTINCT FROM p_skip_day
     CROSS JOIN LATERAL (
           SELECT e.location_at, e.lat, e.lng
             FROM dwh.fact_vehicle_event AS e
            WHERE e.landing_day = d.landing_day
              AND e.vehicle_id = d.vehicle_id
              AND e.event = 'update'
              AND e.location_at BETWEEN a.start_at AND a.finish_at) AS x
$$;

-- Moves the loader's distances into dwh: only rows of the pairs staged, each once (the
-- primary key), then empties the distance staging.
CREATE PROCEDURE dwh.apply_distances(INOUT p_rows bigint DEFAULT NULL)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_stray text;
BEGIN
    PERFORM pg_advisory_xact_lock(2032060102);
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
    TRUNCATE staging.distance_pair, staging.distance_order, staging.vehicle_period_distance,
             staging.dropped_event;
END
$$;

-- Starting a load empties the distance staging too.
CREATE OR REPLACE PROCEDURE dwh.begin_day(p_day date)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_day IS NULL THEN
        RAISE EXCEPTION 'dwh.begin_day: p_day is null';
    END IF;
    -- Loads are serialised: staging is shared, and two days may name the same vehicles.
    PERFORM pg_advisory_xact_lock(2032060102);
    TRUNCATE staging.vehicle_event, staging.duplicate_candidate, staging.vehicle_day,
             staging.period_event, staging.reject, staging.distance_pair,
             staging.distance_order, staging.vehicle_period_distance, staging.dropped_event;
    ALTER TABLE staging.vehicle_event DROP CONSTRAINT IF EXISTS vehicle_event_landing_day;
    EXECUTE format('ALTER TABLE staging.vehicle_event ADD CONSTRAINT vehicle_event_landing_day CHECK (landing_day = %L)',
                   p_day);
END
$$;

-- The merge, as in migration 8, but for its distances (above).
CREATE OR REPLACE PROCEDURE dwh.merge_staged_day(
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
#variable_conflict error
DECLARE
    v_part        text := dwh.day_partition(p_day);
    v_staged_veh  bigint;
    v_dropped     bigint;
    v_vehicles    text[];
    v_periods     text[];
    v_new         text[];
    v_rule_moved  boolean;
BEGIN
    IF p_day IS NULL THEN
        RAISE EXCEPTION 'dwh.merge_staged_day: p_day is null';
    END IF;
    PERFORM pg_advisory_xact_lock(2032060102);
    -- staging must hold this day: dwh.begin_day put the day's CHECK on it.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint AS c
                    WHERE c.conrelid = 'staging.vehicle_event'::regclass
                      AND c.conname = 'vehicle_event_landing_day'
                      AND pg_catalog.pg_get_constraintdef(c.oid) LIKE '%' || p_day::text || '%') THEN
        RAISE EXCEPTION 'dwh.merge_staged_day(%): staging was not prepared for this day by dwh.begin_day', p_day;
    END IF;
    PERFORM set_config('work_mem', s.work_mem, true),
            set_config('maintenance_work_mem', s.maintenance_work_mem, true)
       FROM dwh.merge_setting AS s;

    UPDATE dwh.distance_rule AS r SET max_speed_mps = p_max_speed_mps
     WHERE r.max_speed_mps IS DISTINCT FROM p_max_speed_mps;
    v_rule_moved := FOUND;

    -- The day's track index, built once over the whole day (cheaper than per row).
    EXECUTE format('CREATE INDEX %I ON staging.vehicle_event (vehicle_id, location_at) INCLUDE (lat, lng, landing_day) WHERE event = ''update''',
                   v_part || '_track');
    -- Statistics, and the count of all-visible pages (COPY FREEZE set them all) without which
    -- the planner would not read tracks from the index alone.
    ANALYZE staging.vehicle_event;

    -- Of the events equal to a candidate, the first in landing order (file time, NULLs last,
    -- then key, then line) stays, as d2d_model::parse::Parsed::merge keeps it. Every group of
    -- equal events has a candidate (all but the first the loader saw), whatever the order the
    -- files came in.
    SELECT coalesce(sum(d.events), 0) INTO v_staged_veh FROM staging.vehicle_day AS d;
    WITH dup AS (
        SELECT r.source_key, r.line, r.vehicle_id, r.location_at
          FROM (SELECT e.source_key, e.line, e.vehicle_id, e.location_at,
                       row_number() OVER (
                           PARTITION BY e.vehicle_id, e.location_at, e.lat, e.lng, e.event_at,
                                        e.organization_id
                           ORDER BY e.source_time NULLS LAST, e.source_key, e.line) AS occurrence
                  FROM (SELECT DISTINCT c.vehicle_id, c.organization_id, c.event_at, c.lat,
                                        c.lng, c.location_at
                          FROM staging.duplicate_candidate AS c) AS k
                  JOIN staging.vehicle_event AS e
                    ON e.event = 'update'
                   AND e.vehicle_id = k.vehicle_id
                   AND e.location_at = k.location_at
                   AND e.lat = k.lat AND e.lng = k.lng
                   AND e.event_at = k.event_at
                   AND e.organization_id = k.organization_id) AS r
         WHERE r.occurrence > 1
    ), dropped AS (
        DELETE FROM staging.vehicle_event AS t
         USING dup AS d
         WHERE t.event = 'update'
           AND t.vehicle_id = d.vehicle_id
           AND t.location_at = d.location_at
           AND t.source_key = d.source_key
           AND t.line = d.line
        RETURNING t.vehicle_id, t.source_key, t.line
    ), recorded AS (
        INSERT INTO staging.dropped_event (source_key, line)
        SELECT r.source_key, r.line FROM dropped AS r
    ), per_vehicle AS (
        SELECT r.vehicle_id, count(*) AS n FROM dropped AS r GROUP BY r.vehicle_id
    ), fixed AS (
        UPDATE staging.vehicle_day AS v
           SET events = v.events - p.n, fixes = v.fixes - p.n
          FROM per_vehicle AS p
         WHERE v.vehicle_id = p.vehicle_id
        RETURNING p.n
    )
    SELECT coalesce(sum(f.n), 0) INTO v_dropped FROM fixed AS f;
    fact_vehicle_events := v_staged_veh - v_dropped;
    SELECT count(*) INTO staged_events FROM staging.period_event;
    staged_events := staged_events + v_staged_veh;

    -- What the day's previous load named: refreshed below even if the new load no longer does.
    DROP TABLE IF EXISTS pg_temp.day_vehicle;
    CREATE TEMP TABLE day_vehicle ON COMMIT DROP AS
    SELECT d.vehicle_id, d.first_fix_at, d.last_fix_at
      FROM dwh.vehicle_day AS d WHERE d.landing_day = p_day
    UNION ALL
    SELECT d.vehicle_id, d.first_fix_at, d.last_fix_at FROM staging.vehicle_day AS d;
    SELECT array_agg(DISTINCT e.operating_period_id) INTO v_periods
      FROM dwh.fact_period_event AS e
     WHERE e.landing_day = p_day;

    CALL dwh.swap_day_partition(p_day);

    DELETE FROM dwh.fact_period_event AS e WHERE e.landing_day = p_day;
    DELETE FROM dwh.vehicle_day AS d WHERE d.landing_day = p_day;

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

    INSERT INTO dwh.vehicle_day SELECT * FROM staging.vehicle_day AS d WHERE d.landing_day = p_day;

    SELECT array_agg(DISTINCT v.vehicle_id) INTO v_vehicles FROM pg_temp.day_vehicle AS v;
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

    -- Distances: the pairs to recompute go to staging.distance_pair, their old rows go; the
    -- loader computes the new ones with d2d_model's kernel and hands them to
    -- dwh.apply_distances in this transaction. A new rule recomputes everything; otherwise
    -- the periods the day (re)defines, for every vehicle, and the pairs of the day's vehicles
    -- (before and after) whose fixes of the day fall in a period's window.
    IF v_rule_moved THEN
        CALL dwh.stage_all_distance_pairs();
    ELSE
        INSERT INTO staging.distance_pair (operating_period_id, vehicle_id, start_at, finish_at)
        SELECT p.operating_period_id, d.vehicle_id, p.start_at, p.finish_at
          FROM dwh.dim_operating_period AS p
          JOIN dwh.vehicle_day AS d
            ON d.first_fix_at <= p.finish_at AND d.last_fix_at >= p.start_at
         WHERE NOT p.deleted AND p.operating_period_id = ANY (v_periods)
        UNION
        SELECT p.operating_period_id, v.vehicle_id, p.start_at, p.finish_at
          FROM dwh.dim_operating_period AS p
          JOIN pg_temp.day_vehicle AS v
            ON v.first_fix_at <= p.finish_at AND v.last_fix_at >= p.start_at
         WHERE NOT p.deleted;
        -- Two statements, each through the primary key: an OR would scan the whole table,
        -- which grows with every day loaded.
        DELETE FROM dwh.vehicle_period_distance AS d
         WHERE d.operating_period_id = ANY (v_periods);
        DELETE FROM dwh.vehicle_period_distance AS d
         USING staging.distance_pair AS a
         WHERE d.operating_period_id = a.operating_period_id
           AND d.vehicle_id = a.vehicle_id;
    END IF;
    -- NULL, not a count: the distances are the loader's to compute (a merge before this
    -- migration returned the rows it wrote).
    distance_rows := NULL;
    DROP TABLE pg_temp.day_vehicle;

    CALL etl.replace_rejects(p_day, reject_rows);

    TRUNCATE staging.duplicate_candidate, staging.vehicle_day, staging.period_event,
             staging.reject;
END
$$;


-- The second distance implementation goes.
DROP PROCEDURE dwh.refresh_vehicle_period_distance(text[], bigint);
DROP PROCEDURE dwh.compute_pair_distances(double precision, bigint);
DROP AGGREGATE dwh.track_walk(double precision, double precision, timestamptz, double precision);
DROP FUNCTION dwh.track_walk_step(dwh.track_walk_state, double precision, double precision,
                                  timestamptz, double precision);
DROP TYPE dwh.track_walk_state;
DROP FUNCTION dwh.haversine_m(double precision, double precision, double precision,
                              double precision);

-- A distance run is part of a load or a refresh: the loader calls these, nobody else.
REVOKE EXECUTE ON PROCEDURE dwh.stage_all_distance_pairs(), dwh.begin_distance_refresh(double precision),
    dwh.analyze_distance_order(), dwh.apply_distances(bigint)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION dwh.distance_pair_fixes(date) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE dwh.begin_distance_refresh(double precision),
    dwh.analyze_distance_order(), dwh.apply_distances(bigint)
    TO d2d_loader;
GRANT EXECUTE ON FUNCTION dwh.distance_pair_fixes(date) TO d2d_loader;
