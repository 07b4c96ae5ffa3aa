-- migrate: no-transaction
-- The unread reminders due (lc_notify_unread): a partial index of the few participant rows waiting for one, in
-- the order they became due. Built CONCURRENTLY (writes go on); a build that failed half-way leaves an invalid
-- index behind, hence the DROP first: this file may run again from its start.
DROP INDEX CONCURRENTLY IF EXISTS "chat_participants_unread_since_idx";--> statement-breakpoint
CREATE INDEX CONCURRENTLY "chat_participants_unread_since_idx" ON "chat_participants" USING btree ("unread_since") WHERE "chat_participants"."unread_since" is not null;
