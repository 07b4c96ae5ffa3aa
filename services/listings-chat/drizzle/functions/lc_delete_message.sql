-- migrate: after lc_webhooks_on, lc_webhook_message_data, lc_append_events, lc_message_json
-- Deletes a message. Status: deleted (one row per participant, with event ids), unchanged (already deleted:
-- the message as it is), not_found, forbidden (as for edits). (0003) The events do not hold the content, so
-- nothing in them is blanked (0006).
--
-- The recipient's total moved in the append's upsert of their stream row (one row version, where it was a
-- second UPDATE), by what their count did. (0010)
--
-- Stored as deleted by its sender (`deleted_by`, 0023); the platform's deletes are lc_platform_delete_message.
--
-- Webhooks (0027): while lc_webhooks_on(), its `message.deleted`.
CREATE OR REPLACE FUNCTION lc_delete_message(p_user_id bigint, p_message_id bigint)
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  v_json jsonb;
  v_recipient chat_participants;
  v_delta bigint := 0;
BEGIN
  SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
  IF NOT FOUND OR NOT EXISTS (SELECT FROM chats c WHERE c.id = m.chat_id AND p_user_id IN (c.buyer_id, c.seller_id)) THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  IF m.sender_id <> p_user_id THEN
    status := 'forbidden'; RETURN NEXT; RETURN;
  END IF;
  -- The recipient's row first (participants before messages, as everywhere): its read marker and count cannot
  -- move while this decides whether the message was unread for them.
  SELECT * INTO v_recipient FROM chat_participants p
  WHERE p.chat_id = m.chat_id AND p.user_id <> p_user_id FOR UPDATE;
  UPDATE messages mm SET deleted_at = now(), deleted_by = 'sender'
  WHERE mm.id = p_message_id AND mm.deleted_at IS NULL
  RETURNING mm.* INTO m;
  IF NOT FOUND THEN
    -- Deleted before, or by a concurrent request that told everyone: the message as it is now.
    SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
    status := 'unchanged'; message := lc_message_json(m); RETURN NEXT; RETURN;
  END IF;
  -- A message the recipient had not read leaves their unread count.
  IF m.id > coalesce(v_recipient.last_read_message_id, 0) AND v_recipient.unread_count > 0 THEN
    UPDATE chat_participants p SET unread_count = p.unread_count - 1
    WHERE p.chat_id = v_recipient.chat_id AND p.user_id = v_recipient.user_id;
    v_delta := -1;
  END IF;
  v_json := lc_message_json(m);
  IF lc_webhooks_on() THEN
    INSERT INTO webhook_deliveries (type, data) VALUES ('message.deleted', lc_webhook_message_data(m));
  END IF;
  RETURN QUERY
  SELECT 'deleted'::text, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[m.chat_id], ARRAY['message_deleted'], ARRAY[m.id],
    ARRAY[jsonb_build_object('chat_id', m.chat_id, 'message', v_json)],
    ARRAY[v_recipient.user_id], ARRAY[v_delta]) AS a;
END
$$;
