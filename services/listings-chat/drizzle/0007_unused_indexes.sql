-- Indexes no query uses any more, each an entry to write per send: events are not looked up by message
-- (0006), and every user-scoped read of the participants goes through the activity index (0004).
DROP INDEX "chat_events_message_id_idx";--> statement-breakpoint
DROP INDEX "chat_participants_user_chat_idx";