-- Appends an event of one user's own, that belongs to no chat (user_blocked, user_unblocked), to that user's
-- stream, in the caller's transaction, and returns its event_id. Like lc_append_events: one chat_events row
-- (chat_id null), the stream's end bumped as the caller's last lock (held until commit: ids in commit order,
-- a rollback gives it back), so the stream stays dense and replays, polls and gap fills read it as any other.
CREATE OR REPLACE FUNCTION lc_append_user_event(p_user_id bigint, p_type text, p_payload jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  v_id bigint;
  v_event_id bigint;
BEGIN
  INSERT INTO chat_events (chat_id, type, message_id, payload) VALUES (NULL, p_type, NULL, p_payload)
  RETURNING id INTO v_id;
  INSERT INTO user_streams AS s (user_id, last_event_id) VALUES (p_user_id, 1)
  ON CONFLICT (user_id) DO UPDATE SET last_event_id = s.last_event_id + 1
  RETURNING s.last_event_id INTO v_event_id;
  INSERT INTO user_events (user_id, event_id, chat_event_id) VALUES (p_user_id, v_event_id, v_id);
  RETURN v_event_id;
END
$$;
