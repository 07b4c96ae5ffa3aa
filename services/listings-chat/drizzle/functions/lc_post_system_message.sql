-- migrate: after lc_webhooks_on, lc_webhook_message_data, lc_append_events, lc_message_json
-- The platform speaks in a chat (CONTRACT §8): a system message, `kind` system, stored with the platform's
-- sender id (0: no user has it, so "one client_msg_id per sender" makes the platform's retries idempotent, and
-- "not from this user" counts it unread for both). Status:
--   created    one row per participant, with the message and that user's event_id;
--   repeat     the platform stored this client_msg_id in this chat before: the stored message, nothing new;
--   conflict   it used this client_msg_id in another chat;
--   not_found  no such chat.
-- Not refused by a removed listing, a block or a suspension: those stop people, not the platform. As a send
-- (lc_send_messages) does for one message: the message first (a new row locks nothing), then the chat's row,
-- then its participants (activity; unread for each whose marker is below it; archived chats come back for
-- both), then the events, each participant's stream row and badge total last.
--
-- Webhooks (0027): while lc_webhooks_on(), its `message.created` (flags: none), and the participants' unread
-- reminder clocks started as a send starts them.
CREATE OR REPLACE FUNCTION lc_post_system_message(p_chat_id bigint, p_content text, p_data jsonb, p_client_msg_id text)
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  v_json jsonb;
  v_users bigint[] := '{}';
  v_deltas bigint[] := '{}';
  r record;
  v_hooks boolean := lc_webhooks_on();
BEGIN
  PERFORM FROM chats c WHERE c.id = p_chat_id;
  IF NOT FOUND THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  INSERT INTO messages AS mm (chat_id, sender_id, kind, content, data, client_msg_id)
  VALUES (p_chat_id, 0, 'system', p_content, p_data, p_client_msg_id)
  ON CONFLICT DO NOTHING
  RETURNING mm.* INTO m;
  IF NOT FOUND THEN
    -- Stored before (maybe by a concurrent call that just committed: this statement sees it).
    SELECT * INTO m FROM messages mm WHERE mm.sender_id = 0 AND mm.client_msg_id = p_client_msg_id;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'system message client_msg_id % neither inserted nor found', p_client_msg_id;
    END IF;
    IF m.chat_id = p_chat_id THEN
      status := 'repeat'; message := lc_message_json(m);
    ELSE
      status := 'conflict';
    END IF;
    RETURN NEXT; RETURN;
  END IF;
  -- greatest(): concurrent sends commit in any order, and none of it moves back.
  UPDATE chats c SET last_activity_at = greatest(c.last_activity_at, now()),
    last_message_id = greatest(c.last_message_id, m.id)
  WHERE c.id = p_chat_id;
  FOR r IN
    UPDATE chat_participants p SET last_activity_at = greatest(p.last_activity_at, now()),
      unread_count = p.unread_count + CASE WHEN m.id > coalesce(p.last_read_message_id, 0) THEN 1 ELSE 0 END,
      archived = false,
      unread_since = CASE WHEN v_hooks AND p.unread_since IS NULL AND NOT p.unread_notified
          AND m.id > coalesce(p.last_read_message_id, 0) THEN now() ELSE p.unread_since END
    WHERE p.chat_id = p_chat_id
    RETURNING p.user_id, m.id > coalesce(p.last_read_message_id, 0) AS unread
  LOOP
    IF r.unread THEN
      v_users := v_users || r.user_id;
      v_deltas := v_deltas || 1::bigint;
    END IF;
  END LOOP;
  v_json := lc_message_json(m);
  IF v_hooks THEN
    INSERT INTO webhook_deliveries (type, data) VALUES ('message.created', lc_webhook_message_data(m));
  END IF;
  RETURN QUERY
  SELECT 'created'::text, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[p_chat_id], ARRAY['new_message'], ARRAY[m.id],
    ARRAY[jsonb_build_object('chat_id', p_chat_id, 'message', v_json)], v_users, v_deltas) AS a;
END
$$;
