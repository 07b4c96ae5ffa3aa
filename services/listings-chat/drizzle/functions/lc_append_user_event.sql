-- Appends an event to one user's stream only, in the caller's transaction, and returns its event_id: an event
-- of their own that belongs to no chat (user_blocked, user_unblocked: `p_chat_id` null), or one of a chat that
-- only they are to hear (chat_updated for their archive, 0023). Like lc_append_events: one chat_events row, the
-- stream's end bumped as the caller's last lock (held until commit: ids in commit order, a rollback gives it
-- back), so the stream stays dense and replays, polls and gap fills read it as any other.
CREATE OR REPLACE FUNCTION lc_append_user_event(p_user_id bigint, p_type text, p_payload jsonb, p_chat_id bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  v_id bigint;
  v_event_id bigint;
BEGIN
  INSERT INTO chat_events (chat_id, type, message_id, payload) VALUES (p_chat_id, p_type, NULL, p_payload)
  RETURNING id INTO v_id;
  INSERT INTO user_streams AS s (user_id, last_event_id) VALUES (p_user_id, 1)
  ON CONFLICT (user_id) DO UPDATE SET last_event_id = s.last_event_id + 1
  RETURNING s.last_event_id INTO v_event_id;
  INSERT INTO user_events (user_id, event_id, chat_event_id) VALUES (p_user_id, v_event_id, v_id);
  RETURN v_event_id;
END
$$;
--> statement-breakpoint
-- The three-argument form (blocks): an event of no chat.
CREATE OR REPLACE FUNCTION lc_append_user_event(p_user_id bigint, p_type text, p_payload jsonb) RETURNS bigint
LANGUAGE sql AS $$
  SELECT lc_append_user_event(p_user_id, p_type, p_payload, NULL)
$$;
