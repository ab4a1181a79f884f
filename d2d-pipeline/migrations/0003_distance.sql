-- d2d warehouse, migration 3: the distance definition of d2d-model, in SQL.
--
-- Same formula, same operation order and same constants as d2d_model::distance, so the SQL
-- and Rust results agree to the last bit on IEEE-754 machines with the same libm:
--   a = sin²(Δφ/2) + cos φ1 · cos φ2 · sin²(Δλ/2),  d = R · (2 · asin(√a)),  R = 6 371 008.8 m
-- Degrees become radians by multiplying with pi()/180, as Rust's f64::to_radians does.

CREATE FUNCTION dwh.haversine_m(lat1 double precision, lng1 double precision,
                                lat2 double precision, lng2 double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT 6371008.8::double precision * (2 * asin(sqrt(
               s.dphi * s.dphi + cos(lat1 * k.rad) * cos(lat2 * k.rad) * (s.dlambda * s.dlambda))))
      FROM (SELECT pi() / 180 AS rad) AS k,
           LATERAL (SELECT sin((lat2 - lat1) * k.rad / 2) AS dphi,
                           sin((lng2 - lng1) * k.rad / 2) AS dlambda) AS s
$$;
COMMENT ON FUNCTION dwh.haversine_m IS 'Great-circle distance in metres (haversine, R = 6371008.8 m), as d2d_model::distance::haversine_m.';

-- Walking a track in fix order: the state after each fix.
CREATE TYPE dwh.track_walk_state AS (
    kept    bigint,
    metres  double precision,
    last_lat double precision,
    last_lng double precision,
    last_at timestamptz
);

-- One step of the walk. With a speed limit, a fix that would need a higher speed from the last
-- kept fix is skipped (a jump at the same instant counts as infinitely fast), as in
-- d2d_model::distance; without one, every fix counts.
CREATE FUNCTION dwh.track_walk_step(s dwh.track_walk_state, lat double precision,
                                    lng double precision, at timestamptz,
                                    max_speed_mps double precision)
RETURNS dwh.track_walk_state
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    step    double precision;
    seconds double precision;
BEGIN
    IF s IS NULL THEN
        RETURN ROW(1, 0::double precision, lat, lng, at)::dwh.track_walk_state;
    END IF;
    step := dwh.haversine_m(s.last_lat, s.last_lng, lat, lng);
    IF max_speed_mps IS NOT NULL THEN
        seconds := extract(epoch FROM at - s.last_at)::double precision;
        IF (seconds > 0 AND step / seconds > max_speed_mps) OR (seconds <= 0 AND step > 0) THEN
            RETURN s;
        END IF;
    END IF;
    RETURN ROW(s.kept + 1, s.metres + step, lat, lng, at)::dwh.track_walk_state;
END
$$;

-- dwh.track_walk(lat, lng, at, max_speed_mps ORDER BY at, lat, lng): fixes kept, metres and
-- last kept fix of a track. The ORDER BY is part of the definition.
CREATE AGGREGATE dwh.track_walk(double precision, double precision, timestamptz, double precision) (
    SFUNC = dwh.track_walk_step,
    STYPE = dwh.track_walk_state
);

-- Recomputes the distance rows of the given operating periods (NULL: of every period) from
-- dwh.dim_operating_period and the update fixes in dwh.fact_vehicle_event. Deleted or vanished
-- periods lose their rows. p_rows returns the number of rows written.
CREATE PROCEDURE dwh.refresh_vehicle_period_distance(p_periods text[], INOUT p_rows bigint DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_max_speed double precision;
BEGIN
    SELECT r.max_speed_mps INTO v_max_speed FROM dwh.distance_rule AS r;
    IF p_periods IS NULL THEN
        DELETE FROM dwh.vehicle_period_distance;
    ELSE
        DELETE FROM dwh.vehicle_period_distance AS d
         WHERE d.operating_period_id = ANY (p_periods);
    END IF;
    INSERT INTO dwh.vehicle_period_distance
           (operating_period_id, vehicle_id, fixes, first_at, last_at, metres)
    SELECT t.operating_period_id, t.vehicle_id, (t.walk).kept, t.first_at, (t.walk).last_at,
           (t.walk).metres
      FROM (SELECT p.operating_period_id, f.vehicle_id, min(f.location_at) AS first_at,
                   dwh.track_walk(f.lat, f.lng, f.location_at, v_max_speed
                                  ORDER BY f.location_at, f.lat, f.lng) AS walk
              FROM dwh.dim_operating_period AS p
              CROSS JOIN LATERAL (
                    -- A fix repeated (in several events or files) counts once.
                    SELECT DISTINCT e.vehicle_id, e.location_at, e.lat, e.lng
                      FROM dwh.fact_vehicle_event AS e
                     WHERE e.event = 'update'
                       AND e.location_at BETWEEN p.start_at AND p.finish_at) AS f
             WHERE NOT p.deleted
               AND (p_periods IS NULL OR p.operating_period_id = ANY (p_periods))
             GROUP BY p.operating_period_id, f.vehicle_id) AS t;
    GET DIAGNOSTICS p_rows = ROW_COUNT;
END
$$;
