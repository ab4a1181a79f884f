-- d2d warehouse, migration 10: bounded reject lines, and landing files refused as a whole.
--
-- etl.reject.raw keeps at most the first 4 KiB of a refused line (the loader cuts it, as text);
-- the new columns raw_length and raw_sha256 describe the whole line, which stays byte for byte
-- in the lake's raw/ copy of its file. A landing object refused as a whole (a key that cannot
-- be a lake key, a link leading out of the landing folder, a name that breaks the day rule, a
-- gzip file that does not decode) is one row with line 0, an empty raw and no length.
--
-- This migration depends on migrations 1-8 only. It leaves etl.replace_rejects as it is (a
-- later or parallel migration may own that procedure): a trigger fills the new columns of each
-- row inserted from staging.reject, looked up by (source_key, line), unique within a load.

ALTER TABLE staging.reject
    ADD COLUMN raw_length bigint,
    ADD COLUMN raw_sha256 text;
CREATE INDEX reject_source_line ON staging.reject (source_key, line);

-- Rows loaded before this migration keep their raw text whole and no length or checksum;
-- re-running their day replaces them. NOT VALID: the bound holds for every row written from
-- now on without rewriting the history.
ALTER TABLE etl.reject
    ADD COLUMN raw_length bigint CHECK (raw_length >= 0),
    ADD COLUMN raw_sha256 text CHECK (raw_sha256 ~ '^[0-9a-f]{64}$'),
    DROP CONSTRAINT IF EXISTS reject_line_check,
    ADD CONSTRAINT reject_line_check CHECK (line >= 0),
    ADD CONSTRAINT reject_raw_bounded CHECK (octet_length(raw) <= 4096) NOT VALID;

COMMENT ON COLUMN etl.reject.line IS '1-based line number in the source; 0 for a file refused as a whole.';
COMMENT ON COLUMN etl.reject.raw IS 'The first 4 KiB (at most 4096 bytes) of the refused line as text: invalid UTF-8 and NUL replaced by U+FFFD. Empty for a file refused as a whole.';
COMMENT ON COLUMN etl.reject.raw_length IS 'Length in bytes of the whole refused line; NULL for a file refused as a whole (and for rows loaded before migration 10).';
COMMENT ON COLUMN etl.reject.raw_sha256 IS 'Hex SHA-256 of the whole refused line, as read; NULL when raw_length is.';

CREATE FUNCTION etl.reject_fill_raw() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.raw_length IS NULL THEN
        SELECT s.raw_length, s.raw_sha256
          INTO NEW.raw_length, NEW.raw_sha256
          FROM staging.reject AS s
         WHERE s.source_key = NEW.source_key AND s.line = NEW.line;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER reject_fill_raw BEFORE INSERT ON etl.reject
    FOR EACH ROW EXECUTE FUNCTION etl.reject_fill_raw();
