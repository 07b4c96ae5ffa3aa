-- migrate: no-transaction
-- The sweeper's second queue (media/sweeper.ts): the few uploads processed in the last minutes whose original is
-- to be removed once more, in the order they fall due. Built CONCURRENTLY (writes go on); a build that failed
-- half-way leaves an invalid index behind, hence the DROP first: this file may run again from its start.
DROP INDEX CONCURRENTLY IF EXISTS "uploads_original_recheck_idx";--> statement-breakpoint
CREATE INDEX CONCURRENTLY "uploads_original_recheck_idx" ON "uploads" USING btree ("original_recheck_at") WHERE "uploads"."original_recheck_at" is not null;
