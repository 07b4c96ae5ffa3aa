-- migrate: after lc_webhooks_on, lc_webhook_message_data, lc_append_events, lc_blocked, lc_message_json, lc_pair_key, lc_suspended
-- Edits a message. Status: edited (one row per participant, with event ids), not_found (no such message,
-- or the user does not take part in its chat), forbidden (not the sender), already_deleted. (0003)
--
-- With the content rules' flags of the new content (they replace the old ones; null: none), and the status
-- `blocked` while either participant blocks the other: an edit rewrites what the other side already has and
-- tells them, so a blocked user could otherwise go on writing to the blocker through it. (0008)
--
-- The five-argument form (0023): with `p_check_suspension`, the status `suspended` while the platform suspends
-- the user. A system message's sender is the platform's (0), so a user's edit of one is `forbidden`. The
-- four-argument form (the release before's callers) is this without the check.
--
-- Webhooks (0027): while lc_webhooks_on(), its `message.updated` (the new content's flags).
CREATE OR REPLACE FUNCTION lc_edit_message(p_user_id bigint, p_message_id bigint, p_content text, p_flags text[],
  p_check_suspension boolean)
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  c chats;
  v_json jsonb;
BEGIN
  SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
  IF FOUND THEN
    SELECT * INTO c FROM chats cc WHERE cc.id = m.chat_id AND p_user_id IN (cc.buyer_id, cc.seller_id);
  END IF;
  IF NOT FOUND THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  IF m.sender_id <> p_user_id THEN
    status := 'forbidden'; RETURN NEXT; RETURN;
  END IF;
  IF p_check_suspension AND lc_suspended(p_user_id) THEN
    status := 'suspended'; RETURN NEXT; RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock_shared(1010, lc_pair_key(c.buyer_id, c.seller_id));
  IF lc_blocked(c.buyer_id, c.seller_id) THEN
    status := 'blocked'; RETURN NEXT; RETURN;
  END IF;
  -- Re-checked under the row lock: a delete may have committed since the look above.
  UPDATE messages mm SET content = p_content, flags = coalesce(p_flags, '{}'), edited_at = now()
  WHERE mm.id = p_message_id AND mm.deleted_at IS NULL
  RETURNING mm.* INTO m;
  IF NOT FOUND THEN
    status := 'already_deleted'; RETURN NEXT; RETURN;
  END IF;
  v_json := lc_message_json(m);
  IF lc_webhooks_on() THEN
    INSERT INTO webhook_deliveries (type, data) VALUES ('message.updated', lc_webhook_message_data(m));
  END IF;
  RETURN QUERY
  SELECT 'edited'::text, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[m.chat_id], ARRAY['message_edited'], ARRAY[m.id],
    ARRAY[jsonb_build_object('chat_id', m.chat_id, 'message', v_json)]) AS a;
END
$$;
--> statement-breakpoint
-- The four-argument form: as the release before 0023 called it, no suspension checked.
CREATE OR REPLACE FUNCTION lc_edit_message(p_user_id bigint, p_message_id bigint, p_content text, p_flags text[])
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE sql AS $$
  SELECT * FROM lc_edit_message(p_user_id, p_message_id, p_content, p_flags, false)
$$;
