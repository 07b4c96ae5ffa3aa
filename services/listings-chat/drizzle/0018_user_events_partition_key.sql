-- migrate: no-transaction
-- The key of the partitioned user_events (a unique index of a partitioned table must hold its partition key,
-- chat_event_id): built here on today's table, concurrently, so that 0021 attaches it as the first partition's
-- instead of building it under its lock. "A user's events after N" reads its prefix as it read the primary key,
-- and since it holds chat_event_id too, without visiting the table. The primary key it replaces is dropped in
-- 0021. May run again from its start (a failed concurrent build leaves an invalid index).
DROP INDEX CONCURRENTLY IF EXISTS "user_events_user_event_key";--> statement-breakpoint
CREATE UNIQUE INDEX CONCURRENTLY "user_events_user_event_key" ON "user_events" USING btree ("user_id","event_id","chat_event_id");
