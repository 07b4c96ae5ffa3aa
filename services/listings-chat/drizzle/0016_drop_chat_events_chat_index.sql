-- migrate: no-transaction
-- Kept only for the cascade from chats that 0015 dropped: one index entry less per event.
DROP INDEX CONCURRENTLY IF EXISTS "chat_events_chat_id_idx";
