-- A person's data (CONTRACT §12): the erasures under way and their chats still to erase, and the jobs one instance
-- of many runs on a schedule (retention). New tables only: no lock on a table in use. The functions that work them
-- (lc_erasure_step, lc_retention_step) are in drizzle/functions/, applied after this file.
CREATE TABLE "erasure_chats" (
	"user_id" bigint NOT NULL,
	"chat_id" bigint NOT NULL,
	"after_message_id" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "erasure_chats_user_id_chat_id_pk" PRIMARY KEY("user_id","chat_id")
);
--> statement-breakpoint
CREATE TABLE "erasures" (
	"user_id" bigint PRIMARY KEY NOT NULL,
	"requested_at" timestamp with time zone DEFAULT now() NOT NULL,
	"step" text DEFAULT 'start' NOT NULL,
	"cursor" bigint DEFAULT 0 NOT NULL,
	"listed_at" timestamp with time zone,
	"completed_at" timestamp with time zone,
	CONSTRAINT "erasures_step_known" CHECK ("erasures"."step" in ('start', 'messages', 'streams', 'webhooks', 'uploads', 'done'))
);
--> statement-breakpoint
CREATE TABLE "scheduled_jobs" (
	"name" text PRIMARY KEY NOT NULL,
	"next_run_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_started_at" timestamp with time zone,
	"last_finished_at" timestamp with time zone,
	"last_result" jsonb
);
--> statement-breakpoint
CREATE INDEX "erasures_pending_idx" ON "erasures" USING btree ("requested_at") WHERE "erasures"."completed_at" is null;