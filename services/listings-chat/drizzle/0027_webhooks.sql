-- Webhooks (CONTRACT §9): the outbox and queue `webhook_deliveries`, the lease `webhook_lease` that says whether
-- the write functions record (lc_webhooks_on), and the unread reminder's two columns of `chat_participants`.
-- Online: new tables, a nullable column and one whose default is a constant (ADD COLUMN writes the catalog only).
-- The reminders' partial index over `chat_participants` is built CONCURRENTLY by 0028. Instances of the release
-- before go on beside this one: they never read the new columns, and the write functions they call (replaced
-- in place) record only while an instance of this release with WEBHOOK_URL renews the lease.
-- The ALTERs of chat_participants wait for their lock at most half a second, under PostgreSQL's deadlock_timeout
-- (1 s): sends queue behind a waiting ACCESS EXCLUSIVE, and one that waited a second could be picked as the
-- victim of a deadlock check (online-migrations.integration.test.ts saw one in four runs). A time-out instead
-- rolls this file back and the runner tries it again (migrator.ts).
SET LOCAL lock_timeout = '500ms';--> statement-breakpoint
CREATE TABLE "webhook_deliveries" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "webhook_deliveries_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"type" text NOT NULL,
	"data" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"next_attempt_at" timestamp with time zone DEFAULT now(),
	"attempts" integer DEFAULT 0 NOT NULL,
	"last_error" text,
	"retry_from" timestamp with time zone DEFAULT now() NOT NULL,
	"delivered_at" timestamp with time zone,
	"dead_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "webhook_lease" (
	"singleton" boolean PRIMARY KEY DEFAULT true NOT NULL,
	"until" timestamp with time zone NOT NULL,
	CONSTRAINT "webhook_lease_one_row" CHECK ("webhook_lease"."singleton")
);
--> statement-breakpoint
ALTER TABLE "chat_participants" ADD COLUMN "unread_since" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "chat_participants" ADD COLUMN "unread_notified" boolean DEFAULT false NOT NULL;--> statement-breakpoint
CREATE INDEX "webhook_deliveries_due_idx" ON "webhook_deliveries" USING btree ("next_attempt_at") WHERE "webhook_deliveries"."next_attempt_at" is not null;--> statement-breakpoint
CREATE INDEX "webhook_deliveries_dead_idx" ON "webhook_deliveries" USING btree ("id") WHERE "webhook_deliveries"."dead_at" is not null;
