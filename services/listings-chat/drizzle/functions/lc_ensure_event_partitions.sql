-- Also defined by 0021_partition_events.sql, which calls it (a versioned file runs before this folder); its
-- current definition is this one.
-- Adds partitions of `width` ids at `high` to both event tables until at least `p_ahead` widths of ids are left
-- above the newest id handed out; returns how many it added. Each instance calls it when it starts and every few
-- minutes: with 100 million ids per partition, one run leaves room for at least 100 million events. A partition is made as
-- a table of its own and then attached, which locks the partitioned table only against other DDL (CREATE TABLE …
-- PARTITION OF would lock it against reads and writes); it is empty, so attaching it scans nothing. Runs of
-- several instances take turns on a transaction advisory lock and the later ones find nothing to do.
CREATE OR REPLACE FUNCTION lc_ensure_event_partitions(p_ahead integer DEFAULT 2) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
  v_width bigint;
  v_high bigint;
  v_last bigint;
  v_added integer := 0;
BEGIN
  -- 8086002: the key of this function's lock (8086001 is the migration runner's).
  PERFORM pg_advisory_xact_lock(8086002);
  SELECT width, high INTO v_width, v_high FROM event_partitioning FOR UPDATE;
  SELECT last_value INTO v_last FROM chat_events_id_seq;
  WHILE v_high <= v_last + p_ahead * v_width LOOP
    EXECUTE format('CREATE TABLE %I (LIKE chat_events INCLUDING DEFAULTS)', 'chat_events_' || v_high);
    EXECUTE format('ALTER TABLE chat_events ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
      'chat_events_' || v_high, v_high, v_high + v_width);
    -- Insert-only: vacuumed for its visibility map soon, so that reads of the key skip the table.
    EXECUTE format('CREATE TABLE %I (LIKE user_events) WITH (autovacuum_vacuum_insert_scale_factor = 0.02)',
      'user_events_' || v_high);
    EXECUTE format('ALTER TABLE user_events ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
      'user_events_' || v_high, v_high, v_high + v_width);
    v_high := v_high + v_width;
    v_added := v_added + 1;
  END LOOP;
  UPDATE event_partitioning SET high = v_high WHERE high <> v_high;
  RETURN v_added;
END
$$;
