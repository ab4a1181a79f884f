-- d2d warehouse, migration 7: the roles' rights on objects of later migrations.
--
-- Migration 6 granted on ALL TABLES / ROUTINES that existed then; a table, view or procedure
-- created by a later migration would be invisible to the roles. Default privileges make every
-- object the migrating role creates from now on carry the same grants. (They apply to objects
-- created by the role running this migration: run every migration as the same owner, as
-- setup_warehouse does.)
ALTER DEFAULT PRIVILEGES IN SCHEMA staging, dwh, etl
    GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO d2d_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA etl
    GRANT USAGE, SELECT ON SEQUENCES TO d2d_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA dwh, etl
    GRANT EXECUTE ON ROUTINES TO d2d_loader;
ALTER DEFAULT PRIVILEGES IN SCHEMA bi
    GRANT SELECT ON TABLES TO d2d_loader, d2d_bi;
