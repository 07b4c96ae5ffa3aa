-- Photos (CONTRACT §11): the table `uploads` and the message's `attachments`. Online: a new table and a nullable
-- column (ADD COLUMN writes the catalog only); the release before never reads either. The write functions that
-- store and show photos (lc_send_messages, lc_message_json) and the trigger that releases a deleted message's
-- photos (lc_release_message_photos) are in drizzle/functions/, applied after this file.
-- The ALTER of messages waits for its lock at most half a second (as 0027's, under deadlock_timeout); a time-out
-- rolls this file back and the runner tries it again (migrator.ts).
SET LOCAL lock_timeout = '500ms';--> statement-breakpoint
CREATE TABLE "uploads" (
	"id" text PRIMARY KEY NOT NULL,
	"user_id" bigint NOT NULL,
	"content_type" text NOT NULL,
	"declared_size" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"processed_at" timestamp with time zone,
	"width" integer,
	"height" integer,
	"stored_size" integer,
	"rejection" text,
	"message_id" bigint,
	"sweep_after" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "attachments" jsonb;--> statement-breakpoint
CREATE INDEX "uploads_sweep_idx" ON "uploads" USING btree ("sweep_after") WHERE "uploads"."sweep_after" is not null;--> statement-breakpoint
CREATE INDEX "uploads_message_idx" ON "uploads" USING btree ("message_id") WHERE "uploads"."message_id" is not null;--> statement-breakpoint
CREATE INDEX "uploads_user_idx" ON "uploads" USING btree ("user_id");