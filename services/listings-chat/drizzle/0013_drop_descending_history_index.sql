-- migrate: no-transaction
-- The old history index, now unused (the planner takes messages_chat_history_idx, on this release and on the one
-- before, whose query is the same): one index entry less per message.
DROP INDEX CONCURRENTLY IF EXISTS "messages_chat_id_idx";
