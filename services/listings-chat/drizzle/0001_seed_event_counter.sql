-- The event log hands out ids from this single row (see src/events/log.ts).
INSERT INTO "event_counter" ("id", "last_event_id") VALUES (1, 0) ON CONFLICT ("id") DO NOTHING;
