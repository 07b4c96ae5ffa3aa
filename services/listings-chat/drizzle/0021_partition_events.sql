-- The event tables partitioned (see 0015): today's chat_events and user_events become the first partitions
-- (chat_events_0, user_events_0, below event_partitioning.high), partitioned tables of the same names take their
-- place, and lc_ensure_event_partitions adds partitions ahead of the ids in use. Catalog changes only, under the
-- exclusive locks of the two event tables: the bound is proven by the checks 0019 validated, and the keys are
-- the indexes that exist (the first partition's are attached, none is built). The write functions name
-- `chat_events`, `user_events` and `chat_events_id_seq` and go on unchanged, on this release and the one before.
--
-- Both tables first: every statement that takes an event id inserts into chat_events in the same statement, so
-- it holds that table's lock before the sequence's; taking the tables first means that no session holds the
-- sequence while waiting for them (dropping the identity below locks the sequence).
LOCK TABLE "chat_events", "user_events" IN ACCESS EXCLUSIVE MODE;--> statement-breakpoint
DO $$
DECLARE
  v_high bigint := (SELECT high FROM event_partitioning);
  v_last bigint;
  v_called boolean;
BEGIN
  SELECT last_value, is_called INTO v_last, v_called FROM chat_events_id_seq;

  ALTER TABLE chat_events RENAME TO chat_events_0;
  ALTER INDEX chat_events_pkey RENAME TO chat_events_0_pkey;
  -- An identity column cannot be attached (PostgreSQL 17+), and its sequence would be dropped with the first
  -- partition: the ids now come from a sequence of the partitioned table, under the old name, at the same place.
  ALTER TABLE chat_events_0 ALTER COLUMN id DROP IDENTITY;
  CREATE SEQUENCE chat_events_id_seq AS bigint;
  PERFORM setval('chat_events_id_seq', v_last, v_called);
  CREATE TABLE chat_events (
    id bigint NOT NULL DEFAULT nextval('chat_events_id_seq'),
    chat_id bigint,
    type text NOT NULL,
    message_id bigint,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT chat_events_pkey PRIMARY KEY (id)
  ) PARTITION BY RANGE (id);
  ALTER SEQUENCE chat_events_id_seq OWNED BY chat_events.id;
  EXECUTE format('ALTER TABLE chat_events ATTACH PARTITION chat_events_0 FOR VALUES FROM (MINVALUE) TO (%s)', v_high);

  ALTER TABLE user_events RENAME TO user_events_0;
  ALTER INDEX user_events_user_event_key RENAME TO user_events_0_user_event_key;
  -- Replaced by the key 0018 built: one index entry less per event and participant.
  ALTER TABLE user_events_0 DROP CONSTRAINT user_events_user_id_event_id_pk;
  ALTER TABLE user_events_0 SET (autovacuum_vacuum_insert_scale_factor = 0.02);
  CREATE TABLE user_events (
    user_id bigint NOT NULL,
    event_id bigint NOT NULL,
    chat_event_id bigint NOT NULL
  ) PARTITION BY RANGE (chat_event_id);
  CREATE UNIQUE INDEX user_events_user_event_key ON user_events (user_id, event_id, chat_event_id);
  EXECUTE format('ALTER TABLE user_events ATTACH PARTITION user_events_0 FOR VALUES FROM (MINVALUE) TO (%s)', v_high);
END
$$;--> statement-breakpoint
-- Adds partitions of `width` ids at `high` to both event tables until at least `p_ahead` widths of ids are left
-- above the newest id handed out; returns how many it added. Each instance calls it when it starts and every few
-- minutes: with 100 million ids per partition, one run leaves room for at least 100 million events. A partition is made as
-- a table of its own and then attached, which locks the partitioned table only against other DDL (CREATE TABLE …
-- PARTITION OF would lock it against reads and writes); it is empty, so attaching it scans nothing. Runs of
-- several instances take turns on a transaction advisory lock and the later ones find nothing to do.
CREATE FUNCTION lc_ensure_event_partitions(p_ahead integer DEFAULT 2) RETURNS integer LANGUAGE plpgsql AS $$
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
$$;--> statement-breakpoint
SELECT lc_ensure_event_partitions();
