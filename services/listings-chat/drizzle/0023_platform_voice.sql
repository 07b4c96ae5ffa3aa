-- The platform's voice (CONTRACT §8): people, suspensions, listing fan-outs, system messages, platform deletes and
-- archive. Online: new tables, and new columns whose defaults are constants (ADD COLUMN then only writes the
-- catalog: no table is rewritten). The checks are added NOT VALID (they hold for new rows at once, no scan under
-- ACCESS EXCLUSIVE) and validated by 0025; the archived list's index is built CONCURRENTLY by 0024. Instances of
-- the release before go on working beside this one: they never write the new columns, and a system message's
-- sender is stored as 0 (no user has it), not NULL. `listings.chat_json` and `people.peer_json` are what chat
-- lists show of them, written with them (lc_put_listing, putPerson): the list embeds them as they are instead
-- of building two JSON objects per chat; 0026 fills `chat_json` for the listings registered before.
CREATE TABLE "listing_fanouts" (
	"listing_id" bigint PRIMARY KEY NOT NULL,
	"after_buyer_id" bigint DEFAULT 0 NOT NULL,
	"rerun" boolean DEFAULT false NOT NULL,
	"requested_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "listing_fanouts_requested_idx" ON "listing_fanouts" USING btree ("requested_at","listing_id");--> statement-breakpoint
CREATE TABLE "people" (
	"user_id" bigint PRIMARY KEY NOT NULL,
	"display_name" text,
	"avatar_url" text,
	"peer_json" json NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "suspensions" (
	"user_id" bigint PRIMARY KEY NOT NULL,
	"until" timestamp with time zone,
	"reason" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "chat_participants" ADD COLUMN "archived" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "listings" ADD COLUMN "chat_json" json;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "kind" text DEFAULT 'text' NOT NULL;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "data" jsonb;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "deleted_by" text;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "delete_reason" text;--> statement-breakpoint
ALTER TABLE "messages" ADD CONSTRAINT "messages_kind_known" CHECK ("messages"."kind" in ('text', 'system', 'image')) NOT VALID;--> statement-breakpoint
ALTER TABLE "messages" ADD CONSTRAINT "messages_deleted_by_known" CHECK ("messages"."deleted_by" in ('sender', 'platform')) NOT VALID;
