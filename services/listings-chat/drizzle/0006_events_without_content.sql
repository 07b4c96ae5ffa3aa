-- Each message's content is stored once, in its row. Events about a message keep who, where and when, and
-- are read together with the message as it is now (lc_stream_page in 0005): a send writes the content once
-- (it was written twice), and a delete no longer rewrites every event that carried the message.
-- Events stored before this keep their copy, which reads ignore (the message row wins).
CREATE OR REPLACE FUNCTION lc_append_events(p_chat_ids bigint[], p_types text[], p_message_ids bigint[], p_payloads jsonb[])
RETURNS TABLE (ord bigint, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH ev AS MATERIALIZED (
    SELECT e.ord, nextval('chat_events_id_seq') AS id, e.chat_id, e.type, e.message_id, e.payload,
      c.buyer_id, c.seller_id
    FROM unnest(p_chat_ids, p_types, p_message_ids, p_payloads) WITH ORDINALITY
      AS e(chat_id, type, message_id, payload, ord)
    JOIN chats c ON c.id = e.chat_id
  ), stored AS (
    INSERT INTO chat_events (id, chat_id, type, message_id, payload)
    SELECT ev.id, ev.chat_id, ev.type, ev.message_id,
      -- The message is the message row's to keep (its events are read with it, lc_stream_page): stored
      -- once, and a deleted message's content is gone from everywhere the moment the row says so.
      CASE WHEN ev.message_id IS NOT NULL THEN ev.payload - 'message' ELSE ev.payload END
    FROM ev
  ), addressed AS MATERIALIZED (
    SELECT ev.ord, ev.id, u.user_id FROM ev CROSS JOIN LATERAL (VALUES (ev.buyer_id), (ev.seller_id)) AS u(user_id)
  ), bumped AS (
    INSERT INTO user_streams AS s (user_id, last_event_id)
    SELECT a.user_id, count(*) FROM addressed a GROUP BY a.user_id ORDER BY a.user_id
    ON CONFLICT (user_id) DO UPDATE SET last_event_id = s.last_event_id + excluded.last_event_id
    RETURNING s.user_id, s.last_event_id
  ), numbered AS MATERIALIZED (
    SELECT a.ord, a.id, a.user_id,
      b.last_event_id - count(*) OVER w + row_number() OVER (w ORDER BY a.ord) AS event_id
    FROM addressed a JOIN bumped b ON b.user_id = a.user_id
    WINDOW w AS (PARTITION BY a.user_id)
  ), linked AS (
    INSERT INTO user_events (user_id, event_id, chat_event_id) SELECT n.user_id, n.event_id, n.id FROM numbered n
  )
  SELECT n.ord, n.user_id, n.event_id FROM numbered n;
END
$$;
--> statement-breakpoint
-- As in 0004, without blanking the content in the events: they no longer hold it.
CREATE OR REPLACE FUNCTION lc_delete_message(p_user_id bigint, p_message_id bigint)
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  v_json jsonb;
  v_recipient chat_participants;
BEGIN
  SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
  IF NOT FOUND OR NOT EXISTS (SELECT FROM chats c WHERE c.id = m.chat_id AND p_user_id IN (c.buyer_id, c.seller_id)) THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  IF m.sender_id <> p_user_id THEN
    status := 'forbidden'; RETURN NEXT; RETURN;
  END IF;
  -- The recipient's row first (participants before messages, as everywhere): its read marker cannot move
  -- while this decides whether the message was unread for them.
  SELECT * INTO v_recipient FROM chat_participants p
  WHERE p.chat_id = m.chat_id AND p.user_id <> p_user_id FOR UPDATE;
  UPDATE messages mm SET deleted_at = now()
  WHERE mm.id = p_message_id AND mm.deleted_at IS NULL
  RETURNING mm.* INTO m;
  IF NOT FOUND THEN
    -- Deleted before, or by a concurrent request that told everyone: the message as it is now.
    SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
    status := 'unchanged'; message := lc_message_json(m); RETURN NEXT; RETURN;
  END IF;
  v_json := lc_message_json(m);
  RETURN QUERY
  SELECT 'deleted'::text, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[m.chat_id], ARRAY['message_deleted'], ARRAY[m.id],
    ARRAY[jsonb_build_object('chat_id', m.chat_id, 'message', v_json)]) AS a;
  -- A message the recipient had not read leaves their unread count (the stream row is locked already).
  IF m.id > coalesce(v_recipient.last_read_message_id, 0) THEN
    UPDATE chat_participants p SET unread_count = greatest(p.unread_count - 1, 0)
    WHERE p.chat_id = v_recipient.chat_id AND p.user_id = v_recipient.user_id;
    UPDATE user_streams s SET unread_total = greatest(s.unread_total - 1, 0) WHERE s.user_id = v_recipient.user_id;
  END IF;
END
$$;
