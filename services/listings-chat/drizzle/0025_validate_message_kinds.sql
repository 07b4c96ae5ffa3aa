-- Proves 0023's checks for every message: a scan under a SHARE UPDATE EXCLUSIVE lock (reads and writes go on).
ALTER TABLE "messages" VALIDATE CONSTRAINT "messages_kind_known";--> statement-breakpoint
ALTER TABLE "messages" VALIDATE CONSTRAINT "messages_deleted_by_known";
