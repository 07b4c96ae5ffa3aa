-- migrate: no-transaction
-- The history index. A message page reads a chat's messages newest first (`ORDER BY id DESC`, which is NULLS
-- FIRST), and messages_chat_id_idx is `(chat_id, id DESC NULLS LAST)`: it cannot give that order, so a page of
-- a big chat walked the primary key backwards and filtered out every newer message of every other chat
-- (300,000 rows and 41–49 ms on the review's seed, growing with the whole table). `(chat_id, id)` read
-- backwards gives exactly `id DESC NULLS FIRST`. Built CONCURRENTLY (writes go on); a build that failed half-way
-- leaves an invalid index behind, hence the DROP first: this file may run again from its start.
DROP INDEX CONCURRENTLY IF EXISTS "messages_chat_history_idx";--> statement-breakpoint
CREATE INDEX CONCURRENTLY "messages_chat_history_idx" ON "messages" USING btree ("chat_id","id");
