-- migrate: no-transaction
-- The archived list (`GET /api/v1/chats?archived=1`): a partial index of the few archived rows, in the chat
-- list's order. Built CONCURRENTLY (writes go on); a build that failed half-way leaves an invalid index behind,
-- hence the DROP first: this file may run again from its start.
DROP INDEX CONCURRENTLY IF EXISTS "chat_participants_user_archived_idx";--> statement-breakpoint
CREATE INDEX CONCURRENTLY "chat_participants_user_archived_idx" ON "chat_participants" USING btree ("user_id","last_activity_at" DESC NULLS FIRST,"chat_id" DESC NULLS FIRST) WHERE "chat_participants"."archived";
