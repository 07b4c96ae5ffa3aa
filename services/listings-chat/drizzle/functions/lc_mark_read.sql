-- migrate: after lc_webhooks_on, lc_append_events, lc_iso
-- Moves the user's read marker in a chat forward to a message (never back) and counts what is left unread.
-- Status: read (the marker moved: one row per participant, with event ids), unchanged (it was there or
-- further), chat_not_found (no such chat or not a participant), message_not_found (not in this chat). (0003)
--
-- The counting bounded and one row version each of the participant and of the stream row (0010). Under the
-- participant's row lock (sends and deletes in this chat wait for it), its kept count is exact: the others'
-- live messages above the old marker. The new count:
-- - a recount of the messages after the new marker when there are fewer than 1000 of them (reading up to the
--   newest: none), which also mends a count kept wrong by the release before;
-- - otherwise (an old message marked read in a long chat) the kept count less the others' live messages the
--   marker passes (between the old marker and the new one), instead of counting the rest of the chat: 65 ms
--   for 100k messages before. What is left to count is then the messages between the two markers: it is only
--   large when a marker moves into the middle of a long unread stretch.
-- A message whose id is below the new marker but whose send has not committed is in neither count, and its send
-- will not count it (lc_send_messages counts only ids above the marker).
--
-- Webhooks (0027): a read that moves the marker allows the next unread reminder; while lc_webhooks_on(), the wait
-- for it runs from the oldest message still unread (a key range of messages_chat_history_idx, from the new
-- marker), so a read that leaves messages unread does not push their reminder back; and the read is delivered
-- as `message.read`.
CREATE OR REPLACE FUNCTION lc_mark_read(p_user_id bigint, p_chat_id bigint, p_message_id bigint)
RETURNS TABLE (status text, unread_count bigint, read_at text, user_id bigint, event_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_old_mark bigint;
  v_before bigint;
  v_after_seen integer;
  v_after_unread bigint;
  v_passed bigint;
  v_unread bigint;
  v_hooks boolean := lc_webhooks_on();
BEGIN
  PERFORM FROM chats c WHERE c.id = p_chat_id AND p_user_id IN (c.buyer_id, c.seller_id);
  IF NOT FOUND THEN
    status := 'chat_not_found'; RETURN NEXT; RETURN;
  END IF;
  PERFORM FROM messages mm WHERE mm.id = p_message_id AND mm.chat_id = p_chat_id;
  IF NOT FOUND THEN
    status := 'message_not_found'; RETURN NEXT; RETURN;
  END IF;
  -- Already there or further (a marker never moves back, so no lock is needed to see it): the kept count
  -- answers, nothing is counted or written.
  SELECT p.last_read_message_id, p.unread_count INTO v_old_mark, v_before
  FROM chat_participants p WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
  IF coalesce(v_old_mark, 0) >= p_message_id THEN
    status := 'unchanged'; unread_count := v_before; RETURN NEXT; RETURN;
  END IF;
  -- Again under the row lock (NO KEY, as the sends' and deletes' updates take it): the newest marker and count.
  SELECT p.last_read_message_id, p.unread_count INTO v_old_mark, v_before
  FROM chat_participants p WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id FOR NO KEY UPDATE;
  IF coalesce(v_old_mark, 0) >= p_message_id THEN
    status := 'unchanged'; unread_count := v_before; RETURN NEXT; RETURN;
  END IF;
  SELECT count(*), count(*) FILTER (WHERE t.sender_id <> p_user_id AND t.deleted_at IS NULL)
  INTO v_after_seen, v_after_unread
  FROM (SELECT mm.sender_id, mm.deleted_at FROM messages mm
        WHERE mm.chat_id = p_chat_id AND mm.id > p_message_id ORDER BY mm.id LIMIT 1000) t;
  IF v_after_seen < 1000 THEN
    v_unread := v_after_unread;
  ELSE
    SELECT count(*) INTO v_passed FROM messages mm
    WHERE mm.chat_id = p_chat_id AND mm.id > coalesce(v_old_mark, 0) AND mm.id <= p_message_id
      AND mm.sender_id <> p_user_id AND mm.deleted_at IS NULL;
    v_unread := greatest(v_before - v_passed, 0);
  END IF;
  UPDATE chat_participants p SET last_read_message_id = p_message_id, unread_count = v_unread,
    unread_since = CASE WHEN v_hooks AND v_unread > 0 THEN
        (SELECT mm.created_at FROM messages mm
         WHERE mm.chat_id = p_chat_id AND mm.id > p_message_id AND mm.sender_id <> p_user_id AND mm.deleted_at IS NULL
         ORDER BY mm.id LIMIT 1) END,
    unread_notified = false
  WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
  RETURN QUERY
  SELECT 'read'::text, v_unread, lc_iso(now()), a.user_id, a.event_id
  FROM lc_append_events(ARRAY[p_chat_id], ARRAY['message_read'], ARRAY[p_message_id],
    ARRAY[jsonb_build_object('chat_id', p_chat_id, 'message_id', p_message_id, 'read_by', p_user_id,
      'read_at', lc_iso(now()))],
    ARRAY[p_user_id], ARRAY[v_unread - v_before]) AS a;
  IF v_hooks THEN
    INSERT INTO webhook_deliveries (type, data)
    VALUES ('message.read', jsonb_build_object('chat_id', p_chat_id, 'user_id', p_user_id,
      'message_id', p_message_id, 'read_at', lc_iso(now())));
  END IF;
END
$$;
