-- migrate: after lc_webhooks_on, lc_webhook_message_data, lc_append_events, lc_message_json
-- The platform removes a message (CONTRACT §8, moderation): `deleted_by` platform, with its reason (for its
-- moderators, never shown). Status: deleted (one row per participant, with event ids: both hear
-- message_deleted), unchanged (already deleted, by whoever: the message as it is), not_found.
-- Locks in the order every write keeps (functions/README.md): the chat's row first (FOR NO KEY UPDATE, as a
-- send's update of it), then both participants' rows, then the message. The chat's row comes first because
-- this locks both participants' rows, as a send does: without it, a send holding one and this the other would
-- deadlock (found under a mix of sends and platform deletes). A message a participant other than its sender
-- had not read leaves their unread count (a system message: both).
--
-- Webhooks (0027): while lc_webhooks_on(), its `message.deleted`.
CREATE OR REPLACE FUNCTION lc_platform_delete_message(p_message_id bigint, p_reason text)
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  v_json jsonb;
  v_users bigint[] := '{}';
  v_deltas bigint[] := '{}';
  r record;
BEGIN
  SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
  IF NOT FOUND THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  PERFORM FROM chats c WHERE c.id = m.chat_id FOR NO KEY UPDATE;
  FOR r IN
    SELECT p.user_id, p.last_read_message_id, p.unread_count FROM chat_participants p
    WHERE p.chat_id = m.chat_id ORDER BY p.user_id FOR UPDATE
  LOOP
    IF r.user_id <> m.sender_id AND m.id > coalesce(r.last_read_message_id, 0) AND r.unread_count > 0 THEN
      v_users := v_users || r.user_id;
    END IF;
  END LOOP;
  UPDATE messages mm SET deleted_at = now(), deleted_by = 'platform', delete_reason = p_reason
  WHERE mm.id = p_message_id AND mm.deleted_at IS NULL
  RETURNING mm.* INTO m;
  IF NOT FOUND THEN
    SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
    status := 'unchanged'; message := lc_message_json(m); RETURN NEXT; RETURN;
  END IF;
  IF cardinality(v_users) > 0 THEN
    UPDATE chat_participants p SET unread_count = p.unread_count - 1
    WHERE p.chat_id = m.chat_id AND p.user_id = ANY(v_users);
    v_deltas := array_fill(-1::bigint, ARRAY[cardinality(v_users)]);
  END IF;
  v_json := lc_message_json(m);
  IF lc_webhooks_on() THEN
    INSERT INTO webhook_deliveries (type, data) VALUES ('message.deleted', lc_webhook_message_data(m));
  END IF;
  RETURN QUERY
  SELECT 'deleted'::text, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[m.chat_id], ARRAY['message_deleted'], ARRAY[m.id],
    ARRAY[jsonb_build_object('chat_id', m.chat_id, 'message', v_json)], v_users, v_deltas) AS a;
END
$$;
