-- d2d warehouse, migration 6: the loader and BI roles.
--
-- Both are NOLOGIN group roles, created once per cluster; grant them to login users:
--   CREATE ROLE etl_job LOGIN PASSWORD '...' IN ROLE d2d_loader;
--   CREATE ROLE analyst LOGIN PASSWORD '...' IN ROLE d2d_bi;
-- Roles are cluster-wide while migrations run per database, so another database may create
-- them at the same moment: losing that race is fine.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'd2d_loader') THEN
        BEGIN
            CREATE ROLE d2d_loader NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'd2d_bi') THEN
        BEGIN
            CREATE ROLE d2d_bi NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

-- The loader writes staging, dwh and etl, and runs the procedures; it does not change the schema
-- (migrations run as the owner, through setup_warehouse).
GRANT USAGE ON SCHEMA staging, dwh, etl, bi TO d2d_loader;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA staging, dwh, etl TO d2d_loader;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA etl TO d2d_loader;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA dwh, etl TO d2d_loader;
GRANT SELECT ON ALL TABLES IN SCHEMA bi TO d2d_loader;

-- BI reads the bi views and nothing else.
GRANT USAGE ON SCHEMA bi TO d2d_bi;
GRANT SELECT ON ALL TABLES IN SCHEMA bi TO d2d_bi;
