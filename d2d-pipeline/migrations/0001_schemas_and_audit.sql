-- d2d warehouse, migration 1: the four schemas and the audit tables of the load (etl).
--
-- etl.schema_migration itself is created by the migration runner (it must exist before any
-- migration can be recorded); everything else is versioned here.

CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS dwh;
CREATE SCHEMA IF NOT EXISTS bi;

COMMENT ON SCHEMA staging IS 'Rows of the day being loaded, as parsed; empty outside a load transaction.';
COMMENT ON SCHEMA dwh IS 'The warehouse: dimensions, facts and derived metrics. No run ids or load times: lineage is landing day, source object key and line.';
COMMENT ON SCHEMA bi IS 'Views for analysts; the d2d_bi role reads only these.';
COMMENT ON SCHEMA etl IS 'Audit of the daily load: runs, file manifests, rejected lines, applied migrations.';

CREATE TABLE etl.load_run (
    run_id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    landing_day                  date NOT NULL,
    status                       text NOT NULL DEFAULT 'running'
                                 CHECK (status IN ('running', 'succeeded', 'failed')),
    from_lake                    boolean NOT NULL,
    move_landing                 boolean NOT NULL,
    landing                      text,
    lake                         text,
    files                        bigint,
    bytes                        bigint,
    lines                        bigint,
    events                       bigint,
    duplicates                   bigint,
    rejects                      bigint,
    rows_fact_vehicle_event      bigint,
    rows_fact_period_event       bigint,
    rows_dim_vehicle             bigint,
    rows_dim_operating_period    bigint,
    rows_vehicle_period_distance bigint,
    rows_reject                  bigint,
    list_ms                      bigint,
    archive_ms                   bigint,
    parse_ms                     bigint,
    copy_ms                      bigint,
    merge_ms                     bigint,
    quarantine_ms                bigint,
    cleanup_ms                   bigint,
    total_ms                     bigint,
    error                        text,
    started_at                   timestamptz NOT NULL DEFAULT now(),
    finished_at                  timestamptz,
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (status <> 'failed' OR error IS NOT NULL)
);
CREATE INDEX load_run_day ON etl.load_run (landing_day, run_id);

CREATE TABLE etl.file_manifest (
    run_id      bigint NOT NULL REFERENCES etl.load_run ON DELETE CASCADE,
    landing_day date NOT NULL,
    landing_key text COLLATE "C" NOT NULL,
    lake_key    text COLLATE "C" NOT NULL,
    size        bigint NOT NULL CHECK (size >= 0),
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (run_id, landing_key)
);
CREATE INDEX file_manifest_day ON etl.file_manifest (landing_day, landing_key);

-- Replaced per landing day on every successful load of that day.
CREATE TABLE etl.reject (
    landing_day date NOT NULL,
    source_key  text COLLATE "C" NOT NULL,
    line        bigint NOT NULL CHECK (line > 0),
    code        text NOT NULL,
    field       text,
    reason      text NOT NULL,
    raw         text NOT NULL,
    PRIMARY KEY (landing_day, source_key, line)
);
