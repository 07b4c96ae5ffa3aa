-- Proves 0015's bounds for every row: a scan of both tables under a SHARE UPDATE EXCLUSIVE lock (reads and
-- writes go on), so that 0021 attaches them without one under its exclusive lock.
ALTER TABLE "chat_events" VALIDATE CONSTRAINT "chat_events_below_partitions";--> statement-breakpoint
ALTER TABLE "user_events" VALIDATE CONSTRAINT "user_events_below_partitions";
