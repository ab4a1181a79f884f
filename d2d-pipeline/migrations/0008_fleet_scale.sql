-- d2d warehouse, migration 8: a merge that scales with the day, not with the warehouse.
--
-- Measured on migration 7's merge (BENCHMARKS.md): 87-89 % of a load went to dwh.merge_day,
-- which copied every staged row a second time (a window sort to drop duplicates), updated
-- three indexes per row (one keyed by text), DELETEd the day's old rows on a re-run, and
-- walked every fix of every touched period through a PL/pgSQL aggregate step.
--
-- From here on:
-- * dwh.fact_vehicle_event is partitioned by landing day. The loader COPYs (FREEZE) a day
--   straight into staging.vehicle_event, which already has the facts' columns and constraints;
--   dwh.merge_day indexes it, drops the few cross-file duplicates, and swaps it in as the day's
--   partition (the old one is dropped whole). Replacing a day costs what inserting it costs,
--   and no statement reads another day's rows except to compute distances.
-- * Duplicates are found in one place: the loader flags the update events it has probably
--   seen before in the day (a Bloom filter of fixed size, so memory stays flat) and stages
--   those candidates apart; the merge deletes a candidate only when an equal event precedes it
--   in landing order, found through the day's index. Lifecycle events (register/deregister)
--   are few and de-duplicated exactly by the loader.
-- * dwh.vehicle_day rows are summed by the loader while it streams (staging.vehicle_day) and
--   corrected here for the duplicates the merge drops.
-- * Distances are recomputed only for the (period, vehicle) pairs a load can change, from
--   the partitions dwh.vehicle_day names; without a speed limit set-based (window + inline
--   haversine), with one through dwh.track_walk as before.
-- * The primary key (landing_day, source_key, line) and the index on (vehicle_id, landing_day)
--   are gone: lineage is unique by construction (a load takes each source object once, a line
--   once), and dwh.vehicle_day answers which days a vehicle has rows on.
-- * The procedures that swap tables run as the warehouse owner (SECURITY DEFINER), so the
--   loader role still needs no DDL rights; only the loader may call them.

-- Statement memory for the merge's sorts and index builds, set per transaction inside the
-- procedure (SET LOCAL semantics), so the server's defaults stay untouched.
CREATE TABLE dwh.merge_setting (
    singleton            boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    work_mem             text NOT NULL DEFAULT '256MB',
    maintenance_work_mem text NOT NULL DEFAULT '512MB'
);
INSERT INTO dwh.merge_setting DEFAULT VALUES;
COMMENT ON TABLE dwh.merge_setting IS
    'work_mem and maintenance_work_mem that dwh.merge_day sets for its own transaction.';

-- Inlinable (a single expression, no FROM), so the planner folds it into the query instead of
-- calling an SQL function per fix. Same operations in the same order as before.
CREATE OR REPLACE FUNCTION dwh.haversine_m(lat1 double precision, lng1 double precision,
                                           lat2 double precision, lng2 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 6371008.8::double precision * (2 * asin(sqrt(
               sin((lat2 - lat1) * (pi() / 180) / 2) * sin((lat2 - lat1) * (pi() / 180) / 2)
               + cos(lat1 * (pi() / 180)) * cos(lat2 * (pi() / 180))
                 * (sin((lng2 - lng1) * (pi() / 180) / 2) * sin((lng2 - lng1) * (pi() / 180) / 2)))))
$$;

-- 1. The vehicle facts, partitioned by landing day. Existing rows move day by day.
ALTER TABLE dwh.fact_vehicle_event RENAME TO fact_vehicle_event_v7;
DROP INDEX dwh.fact_vehicle_event_fix;
DROP INDEX dwh.fact_vehicle_event_vehicle;

CREATE TABLE dwh.fact_vehicle_event (
    landing_day     date NOT NULL,
    source_key      text COLLATE "C" NOT NULL,
    line            bigint NOT NULL CONSTRAINT fact_vehicle_event_line CHECK (line > 0),
    source_time     timestamp,
    event           text NOT NULL
                    CONSTRAINT fact_vehicle_event_event CHECK (event IN ('register', 'update', 'deregister')),
    vehicle_id      text COLLATE "C" NOT NULL,
    organization_id text COLLATE "C" NOT NULL,
    event_at        timestamptz NOT NULL,
    lat             double precision CONSTRAINT fact_vehicle_event_lat CHECK (lat BETWEEN -90 AND 90),
    lng             double precision CONSTRAINT fact_vehicle_event_lng CHECK (lng BETWEEN -180 AND 180),
    location_at     timestamptz,
    CONSTRAINT fact_vehicle_event_location
        CHECK ((lat IS NULL) = (lng IS NULL) AND (lat IS NULL) = (location_at IS NULL)),
    CONSTRAINT fact_vehicle_event_update_has_location
        CHECK (event <> 'update' OR location_at IS NOT NULL)
) PARTITION BY LIST (landing_day);
COMMENT ON TABLE dwh.fact_vehicle_event IS
    'Every distinct vehicle event of every landing day; one partition per landing day (fact_vehicle_event_YYYYMMDD), replaced whole when the day is loaded again.';

-- A vehicle's track, in time order: what distances and duplicate checks read.
CREATE INDEX fact_vehicle_event_track ON dwh.fact_vehicle_event (vehicle_id, location_at)
    INCLUDE (lat, lng, landing_day) WHERE event = 'update';

-- Staging for the vehicle events: the next day's partition, built aside. Not UNLOGGED, since it
-- becomes part of dwh; it is TRUNCATEd at the start of every load, so COPY may FREEZE its rows.
DROP TABLE staging.vehicle_event;
CREATE TABLE staging.vehicle_event (LIKE dwh.fact_vehicle_event INCLUDING DEFAULTS INCLUDING CONSTRAINTS);

-- Update events the loader has probably seen before in the day: the merge looks up the events
-- equal to each and keeps the first in landing order.
CREATE UNLOGGED TABLE staging.duplicate_candidate (
    vehicle_id      text COLLATE "C" NOT NULL,
    organization_id text COLLATE "C" NOT NULL,
    event_at        timestamptz NOT NULL,
    lat             double precision NOT NULL,
    lng             double precision NOT NULL,
    location_at     timestamptz NOT NULL
);

-- dwh.vehicle_day's rows of the day being loaded, summed by the loader.
CREATE UNLOGGED TABLE staging.vehicle_day (LIKE dwh.vehicle_day);

-- The day's partition name.
CREATE FUNCTION dwh.day_partition(p_day date) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT 'fact_vehicle_event_' || to_char(p_day, 'YYYYMMDD') $$;

-- Makes staging.vehicle_event (filled, indexed) the partition of its day, replacing the old
-- one, and leaves an empty staging.vehicle_event behind. The CHECK on landing_day that
-- dwh.begin_day put on the table lets ATTACH skip its validation scan.
CREATE PROCEDURE dwh.swap_day_partition(p_day date)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_part text := dwh.day_partition(p_day);
BEGIN
    EXECUTE format('DROP TABLE IF EXISTS dwh.%I', v_part);
    EXECUTE format('ALTER TABLE staging.vehicle_event RENAME TO %I', v_part);
    EXECUTE format('ALTER TABLE staging.%I SET SCHEMA dwh', v_part);
    EXECUTE format('ALTER TABLE dwh.fact_vehicle_event ATTACH PARTITION dwh.%I FOR VALUES IN (%L)',
                   v_part, p_day);
    CREATE TABLE staging.vehicle_event
        (LIKE dwh.fact_vehicle_event INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
END
$$;

-- Existing rows: one partition per landing day, built and indexed like a load builds it.
DO $$
DECLARE
    v_day date;
BEGIN
    FOR v_day IN SELECT DISTINCT landing_day FROM dwh.fact_vehicle_event_v7 ORDER BY 1 LOOP
        EXECUTE format('ALTER TABLE staging.vehicle_event ADD CONSTRAINT vehicle_event_landing_day CHECK (landing_day = %L)', v_day);
        INSERT INTO staging.vehicle_event
               (landing_day, source_key, line, source_time, event, vehicle_id, organization_id,
                event_at, lat, lng, location_at)
        SELECT landing_day, source_key, line, source_time, event, vehicle_id, organization_id,
               event_at, lat, lng, location_at
          FROM dwh.fact_vehicle_event_v7
         WHERE landing_day = v_day
         ORDER BY source_time NULLS LAST, source_key, line;
        EXECUTE format('CREATE INDEX %I ON staging.vehicle_event (vehicle_id, location_at) INCLUDE (lat, lng, landing_day) WHERE event = ''update''',
                       dwh.day_partition(v_day) || '_track');
        CALL dwh.swap_day_partition(v_day);
    END LOOP;
END
$$;
DROP TABLE dwh.fact_vehicle_event_v7;

-- 2. Starting a load: the load lock, empty staging, and the day's CHECK on staging.
CREATE PROCEDURE dwh.begin_day(p_day date)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_day IS NULL THEN
        RAISE EXCEPTION 'dwh.begin_day: p_day is null';
    END IF;
    -- Loads are serialised: staging is shared, and two days may name the same vehicles.
    PERFORM pg_advisory_xact_lock(2032060102);
    TRUNCATE staging.vehicle_event, staging.duplicate_candidate, staging.vehicle_day,
             staging.period_event, staging.reject;
    ALTER TABLE staging.vehicle_event DROP CONSTRAINT IF EXISTS vehicle_event_landing_day;
    EXECUTE format('ALTER TABLE staging.vehicle_event ADD CONSTRAINT vehicle_event_landing_day CHECK (landing_day = %L)',
                   p_day);
END
$$;

-- 3. Distances of given (period, vehicle) pairs, from the partitions dwh.vehicle_day names.
-- Reads pg_temp.distance_pair (pair_no, operating_period_id, vehicle_id, start_at, finish_at),
-- which the caller fills (pair_no numbers the pairs: fixes sort by it, an integer, not by two
-- texts); appends the rows to dwh.vehicle_period_distance (the caller deleted the
-- old ones). Repeated fixes count once; without a speed limit the walk is a window over the
-- fixes in (time, lat, lng) order; with one, dwh.track_walk.
CREATE PROCEDURE dwh.compute_pair_distances(p_max_speed_mps double precision,
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
                  FROM (SELECT DISTINCT a.pair_no, x.location_at, x.lat, x.lng
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
                       ) AS f
                WINDOW w AS (PARTITION BY f.pair_no ORDER BY f.location_at, f.lat, f.lng)) AS s
         GROUP BY s.pair_no) AS t
          JOIN pg_temp.distance_pair AS p ON p.pair_no = t.pair_no;
    ELSE
        INSERT INTO dwh.vehicle_period_distance
               (operating_period_id, vehicle_id, fixes, first_at, last_at, metres)
        SELECT t.operating_period_id, t.vehicle_id, (t.walk).kept, t.first_at, (t.walk).last_at,
               (t.walk).metres
          FROM (SELECT f.operating_period_id, f.vehicle_id, min(f.location_at) AS first_at,
                       dwh.track_walk(f.lat, f.lng, f.location_at, p_max_speed_mps
                                      ORDER BY f.location_at, f.lat, f.lng) AS walk
                  FROM (SELECT DISTINCT a.operating_period_id, a.vehicle_id,
                               x.location_at, x.lat, x.lng
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
                       ) AS f
                 GROUP BY f.operating_period_id, f.vehicle_id) AS t;
    END IF;
    GET DIAGNOSTICS p_rows = ROW_COUNT;
END
$$;

-- Every distance, from scratch (a new rule, or by hand after a repair).
DROP PROCEDURE dwh.refresh_vehicle_period_distance(text[], bigint);
CREATE PROCEDURE dwh.refresh_vehicle_period_distance(p_periods text[], INOUT p_rows bigint DEFAULT NULL)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_max_speed double precision;
BEGIN
    SELECT r.max_speed_mps INTO v_max_speed FROM dwh.distance_rule AS r;
    DROP TABLE IF EXISTS pg_temp.distance_pair;
    CREATE TEMP TABLE distance_pair ON COMMIT DROP AS
    SELECT row_number() OVER (ORDER BY q.operating_period_id, q.vehicle_id) AS pair_no, q.*
      FROM (SELECT DISTINCT p.operating_period_id, d.vehicle_id, p.start_at, p.finish_at
              FROM dwh.dim_operating_period AS p
              JOIN dwh.vehicle_day AS d
                ON d.first_fix_at <= p.finish_at AND d.last_fix_at >= p.start_at
             WHERE NOT p.deleted
               AND (p_periods IS NULL OR p.operating_period_id = ANY (p_periods))) AS q;
    IF p_periods IS NULL THEN
        DELETE FROM dwh.vehicle_period_distance;
    ELSE
        DELETE FROM dwh.vehicle_period_distance AS d WHERE d.operating_period_id = ANY (p_periods);
    END IF;
    CALL dwh.compute_pair_distances(v_max_speed, p_rows);
    DROP TABLE pg_temp.distance_pair;
END
$$;

-- 4. The merge.
DROP PROCEDURE dwh.merge_day(date, double precision, bigint, bigint, bigint, bigint, bigint,
                             bigint, bigint, bigint);
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
        RAISE EXCEPTION 'dwh.merge_day: p_day is null';
    END IF;
    PERFORM pg_advisory_xact_lock(2032060102);
    -- staging must hold this day: dwh.begin_day put the day's CHECK on it.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_constraint AS c
                    WHERE c.conrelid = 'staging.vehicle_event'::regclass
                      AND c.conname = 'vehicle_event_landing_day'
                      AND pg_catalog.pg_get_constraintdef(c.oid) LIKE '%' || p_day::text || '%') THEN
        RAISE EXCEPTION 'dwh.merge_day(%): staging was not prepared for this day by dwh.begin_day', p_day;
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
        RETURNING t.vehicle_id
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

    -- Distances: a new rule recomputes everything; otherwise the periods the day (re)defines,
    -- for every vehicle, and the pairs of the day's vehicles (before and after) whose fixes of
    -- the day fall in a period's window. Every other pair reads no fix of this day.
    IF v_rule_moved THEN
        CALL dwh.refresh_vehicle_period_distance(NULL, distance_rows);
    ELSE
        DROP TABLE IF EXISTS pg_temp.distance_pair;
        CREATE TEMP TABLE distance_pair ON COMMIT DROP AS
        SELECT row_number() OVER (ORDER BY q.operating_period_id, q.vehicle_id) AS pair_no, q.*
          FROM (
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
         WHERE NOT p.deleted) AS q;
        -- Two statements, each through the primary key: an OR would scan the whole table,
        -- which grows with every day loaded.
        DELETE FROM dwh.vehicle_period_distance AS d
         WHERE d.operating_period_id = ANY (v_periods);
        DELETE FROM dwh.vehicle_period_distance AS d
         USING pg_temp.distance_pair AS a
         WHERE d.operating_period_id = a.operating_period_id
           AND d.vehicle_id = a.vehicle_id;
        ANALYZE pg_temp.distance_pair;
        CALL dwh.compute_pair_distances(p_max_speed_mps, distance_rows);
        DROP TABLE pg_temp.distance_pair;
    END IF;
    DROP TABLE pg_temp.day_vehicle;

    CALL etl.replace_rejects(p_day, reject_rows);

    TRUNCATE staging.duplicate_candidate, staging.vehicle_day, staging.period_event,
             staging.reject;
END
$$;

-- Only the loader (and the owner) may start and merge a load; the swapping procedures run as
-- the owner, so nobody else may call them.
REVOKE EXECUTE ON PROCEDURE dwh.begin_day(date), dwh.swap_day_partition(date),
    dwh.merge_day(date, double precision, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint)
    FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE dwh.begin_day(date),
    dwh.merge_day(date, double precision, bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint)
    TO d2d_loader;
REVOKE EXECUTE ON PROCEDURE dwh.swap_day_partition(date) FROM d2d_loader;

-- Fingerprints cover the partitioned facts as one table, as before.
CREATE OR REPLACE FUNCTION etl.dwh_checksums()
RETURNS TABLE (table_name text, row_count bigint, md5 text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_table text;
BEGIN
    FOR v_table IN
        SELECT c.relname FROM pg_catalog.pg_class AS c
          JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = 'dwh' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND c.relname <> 'merge_setting'
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
