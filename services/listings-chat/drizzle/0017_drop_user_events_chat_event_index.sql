-- migrate: no-transaction
-- Kept only for the cascade from chat_events that 0015 dropped: one index entry less per event and participant.
DROP INDEX CONCURRENTLY IF EXISTS "user_events_chat_event_idx";
