-- Photos: `uploads.original_recheck_at`, when the sweeper removes a processed upload's original once more (the end
-- of its presigned PUT's window: whoever holds the URL could PUT the bytes again until then). Online: a nullable
-- column (ADD COLUMN writes the catalog only), which the release before never reads; its partial index is built
-- CONCURRENTLY by 0032. The ALTER waits for its lock at most half a second (as 0027's, under deadlock_timeout); a
-- time-out rolls this file back and the runner tries it again (migrator.ts).
SET LOCAL lock_timeout = '500ms';--> statement-breakpoint
ALTER TABLE "uploads" ADD COLUMN "original_recheck_at" timestamp with time zone;
