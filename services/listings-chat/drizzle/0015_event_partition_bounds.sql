-- The first step of partitioning the event tables (chat_events by id, user_events by chat_event_id, with the
-- same bounds, so that a range of events and its rows in the users' streams go together), online:
-- 0015 drops the foreign keys and bounds today's tables with NOT VALID checks (catalog changes, an instant under
-- their locks); 0016–0018 drop the indexes that served only the foreign keys and build the key the partitioned
-- user_events needs, concurrently; 0019 validates the checks (a scan that blocks no reads or writes); 0021 makes
-- today's tables the first partitions, whose bound the validated checks already prove (no scan under its lock).
--
-- The foreign keys: nothing deletes a chat or an event (`ON DELETE CASCADE` had nothing to do), each insert of an
-- event paid a lookup and a row lock in the referenced table, each kept an index only a cascade used
-- (chat_events_chat_id_idx, user_events_chat_event_idx), and a key on a partitioned table would make attaching a
-- partition lock chats against writes.
-- The three tables first, in the order a send takes them (chats, then the event tables): dropping the keys would
-- otherwise lock the event tables and then wait for chats, which a send holds while it waits for the event
-- tables (a deadlock, seen under the probe of online-migrations.integration.test.ts).
LOCK TABLE "chats", "chat_events", "user_events" IN ACCESS EXCLUSIVE MODE;--> statement-breakpoint
ALTER TABLE "user_events" DROP CONSTRAINT IF EXISTS "user_events_chat_event_id_chat_events_id_fk";--> statement-breakpoint
ALTER TABLE "chat_events" DROP CONSTRAINT IF EXISTS "chat_events_chat_id_chats_id_fk";--> statement-breakpoint
-- How the event tables are cut: `width` ids per partition, and `high`, the upper bound of the newest partition
-- (lc_ensure_event_partitions of 0021 adds partitions ahead of the ids in use and moves it).
CREATE TABLE "event_partitioning" (
	"singleton" boolean PRIMARY KEY DEFAULT true NOT NULL,
	"width" bigint NOT NULL,
	"high" bigint NOT NULL,
	CONSTRAINT "event_partitioning_one_row" CHECK ("event_partitioning"."singleton"),
	CONSTRAINT "event_partitioning_width_positive" CHECK ("event_partitioning"."width" > 0)
);--> statement-breakpoint
-- Today's tables become the partition below `high`: at least one width (100 million events) above the newest id,
-- so that the events written until 0021 has run (index builds and validation take minutes on a big database)
-- stay within the check; an insert above it would fail.
DO $$
DECLARE
  v_width constant bigint := 100000000;
  v_next bigint;
  v_high bigint;
BEGIN
  SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO v_next FROM chat_events_id_seq;
  v_high := (v_next / v_width + 2) * v_width;
  INSERT INTO event_partitioning (width, high) VALUES (v_width, v_high);
  EXECUTE format('ALTER TABLE chat_events ADD CONSTRAINT chat_events_below_partitions CHECK (id < %s) NOT VALID',
    v_high);
  EXECUTE format(
    'ALTER TABLE user_events ADD CONSTRAINT user_events_below_partitions CHECK (chat_event_id < %s) NOT VALID', v_high);
END
$$;
