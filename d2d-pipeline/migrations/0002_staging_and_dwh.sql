-- d2d warehouse, migration 2: staging tables and the dwh tables.
--
-- Keys and ids use COLLATE "C" (byte order): the same order as d2d-model's Rust strings, and
-- independent of the database's locale.

-- Staging: one day's parsed rows, filled by binary COPY and emptied by dwh.merge_day inside the
-- same transaction. UNLOGGED: nothing here must survive a crash.
CREATE UNLOGGED TABLE staging.vehicle_event (
    source_key      text COLLATE "C" NOT NULL,
    source_time     timestamp,
    line            bigint NOT NULL,
    event           text NOT NULL,
    vehicle_id      text COLLATE "C" NOT NULL,
    organization_id text COLLATE "C" NOT NULL,
    event_at        timestamptz NOT NULL,
    lat             double precision,
    lng             double precision,
    location_at     timestamptz
);

CREATE UNLOGGED TABLE staging.period_event (
    source_key          text COLLATE "C" NOT NULL,
    source_time         timestamp,
    line                bigint NOT NULL,
    event               text NOT NULL,
    operating_period_id text COLLATE "C" NOT NULL,
    organization_id     text COLLATE "C" NOT NULL,
    event_at            timestamptz NOT NULL,
    start_at            timestamptz NOT NULL,
    finish_at           timestamptz NOT NULL
);

CREATE UNLOGGED TABLE staging.reject (
    source_key  text COLLATE "C" NOT NULL,
    source_time timestamp,
    line        bigint NOT NULL,
    code        text NOT NULL,
    field       text,
    reason      text NOT NULL,
    raw         text NOT NULL
);

-- Every distinct vehicle event of every landing day. Keyed by lineage, so a day's rows can be
-- replaced as a whole when the day is loaded again.
CREATE TABLE dwh.fact_vehicle_event (
    landing_day     date NOT NULL,
    source_key      text COLLATE "C" NOT NULL,
    line            bigint NOT NULL CHECK (line > 0),
    source_time     timestamp,
    event           text NOT NULL CHECK (event IN ('register', 'update', 'deregister')),
    vehicle_id      text COLLATE "C" NOT NULL,
    organization_id text COLLATE "C" NOT NULL,
    event_at        timestamptz NOT NULL,
    lat             double precision CHECK (lat BETWEEN -90 AND 90),
    lng             double precision CHECK (lng BETWEEN -180 AND 180),
    location_at     timestamptz,
    PRIMARY KEY (landing_day, source_key, line),
    CHECK ((lat IS NULL) = (lng IS NULL) AND (lat IS NULL) = (location_at IS NULL)),
    CHECK (event <> 'update' OR location_at IS NOT NULL)
);
-- The distance computation reads fixes by time window.
CREATE INDEX fact_vehicle_event_fix ON dwh.fact_vehicle_event (location_at)
    INCLUDE (vehicle_id, lat, lng) WHERE event = 'update';
CREATE INDEX fact_vehicle_event_vehicle ON dwh.fact_vehicle_event (vehicle_id, landing_day);

CREATE TABLE dwh.fact_period_event (
    landing_day         date NOT NULL,
    source_key          text COLLATE "C" NOT NULL,
    line                bigint NOT NULL CHECK (line > 0),
    source_time         timestamp,
    event               text NOT NULL CHECK (event IN ('create', 'delete')),
    operating_period_id text COLLATE "C" NOT NULL,
    organization_id     text COLLATE "C" NOT NULL,
    event_at            timestamptz NOT NULL,
    start_at            timestamptz NOT NULL,
    finish_at           timestamptz NOT NULL CHECK (finish_at >= start_at),
    PRIMARY KEY (landing_day, source_key, line)
);
CREATE INDEX fact_period_event_period ON dwh.fact_period_event (operating_period_id);

-- One vehicle's activity on one landing day: what dim_vehicle is aggregated from, so that
-- refreshing a vehicle does not rescan all its history.
CREATE TABLE dwh.vehicle_day (
    vehicle_id         text COLLATE "C" NOT NULL,
    landing_day        date NOT NULL,
    organization_id    text COLLATE "C" NOT NULL,
    events             bigint NOT NULL CHECK (events > 0),
    fixes              bigint NOT NULL CHECK (fixes >= 0),
    first_event_at     timestamptz NOT NULL,
    last_event_at      timestamptz NOT NULL,
    first_fix_at       timestamptz,
    last_fix_at        timestamptz,
    last_registered_at   timestamptz,
    last_deregistered_at timestamptz,
    lifecycle_event    text CHECK (lifecycle_event IN ('register', 'deregister')),
    lifecycle_at       timestamptz,
    PRIMARY KEY (vehicle_id, landing_day)
);
CREATE INDEX vehicle_day_day ON dwh.vehicle_day (landing_day);

CREATE TABLE dwh.dim_vehicle (
    vehicle_id           text COLLATE "C" PRIMARY KEY,
    organization_id      text COLLATE "C" NOT NULL,
    status               text NOT NULL CHECK (status IN ('registered', 'deregistered', 'unknown')),
    first_event_at       timestamptz NOT NULL,
    last_event_at        timestamptz NOT NULL,
    events               bigint NOT NULL CHECK (events > 0),
    fixes                bigint NOT NULL CHECK (fixes >= 0),
    first_fix_at         timestamptz,
    last_fix_at          timestamptz,
    last_registered_at   timestamptz,
    last_deregistered_at timestamptz,
    first_landing_day    date NOT NULL,
    last_landing_day     date NOT NULL
);

CREATE TABLE dwh.dim_operating_period (
    operating_period_id text COLLATE "C" PRIMARY KEY,
    organization_id     text COLLATE "C" NOT NULL,
    start_at            timestamptz NOT NULL,
    finish_at           timestamptz NOT NULL CHECK (finish_at >= start_at),
    deleted             boolean NOT NULL,
    updated_at          timestamptz NOT NULL,
    events              bigint NOT NULL CHECK (events > 0),
    source_landing_day  date NOT NULL,
    source_key          text COLLATE "C" NOT NULL,
    source_line         bigint NOT NULL
);
CREATE INDEX dim_operating_period_window ON dwh.dim_operating_period (start_at, finish_at)
    WHERE NOT deleted;

CREATE TABLE dwh.vehicle_period_distance (
    operating_period_id text COLLATE "C" NOT NULL,
    vehicle_id          text COLLATE "C" NOT NULL,
    fixes               bigint NOT NULL CHECK (fixes > 0),
    first_at            timestamptz NOT NULL,
    last_at             timestamptz NOT NULL CHECK (last_at >= first_at),
    metres              double precision NOT NULL CHECK (metres >= 0),
    PRIMARY KEY (operating_period_id, vehicle_id)
);

-- The warehouse-wide distance rule. A load with another rule recomputes every distance, so
-- the table never mixes rules.
CREATE TABLE dwh.distance_rule (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_speed_mps double precision CHECK (max_speed_mps > 0)
);
INSERT INTO dwh.distance_rule (max_speed_mps) VALUES (NULL);
