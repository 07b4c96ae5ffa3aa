-- migrate: after lc_message_json
-- Records the unread reminders that are due (CONTRACT §9, `notification.unread`): for each recipient and chat
-- whose `unread_since` is `p_after_s` seconds old or more, oldest first, at most `p_limit`, one delivery with
-- the chat's unread count and its newest unread message (content cut to 200 characters: code points, as
-- left() counts them), and the row marked notified (no other until the recipient reads). A row whose messages
-- were all deleted or read since is cleared without one. Returns how many were recorded.
--
-- A reminder is due at once, ahead of everything else in the queue (`next_attempt_at` -infinity): after an
-- outage the backlog would otherwise hold back the reminders, which are worth something only while fresh.
--
-- Found through chat_participants_unread_since_idx, which holds only the rows waiting: the cost per reminder
-- does not grow with the unread messages elsewhere. SKIP LOCKED: instances sweeping at once take different
-- rows, and a row a send or a read holds is taken on the next sweep. A person being erased, or erased, gets none
-- (CONTRACT §12): the row is cleared without one.
CREATE OR REPLACE FUNCTION lc_notify_unread(p_after_s integer, p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  r record;
  m messages;
  v_message jsonb;
  v_recorded integer := 0;
BEGIN
  FOR r IN
    SELECT p.chat_id, p.user_id, p.unread_count, p.last_read_message_id FROM chat_participants p
    WHERE p.unread_since IS NOT NULL AND p.unread_since <= now() - make_interval(secs => p_after_s)
    ORDER BY p.unread_since LIMIT p_limit
    FOR NO KEY UPDATE SKIP LOCKED
  LOOP
    m := NULL;
    -- Never of a person being erased, or erased (CONTRACT §12): the other side's later sends still mark
    -- their unread, but there is no one to tell. One key probe per reminder, off the write path.
    IF r.unread_count > 0 AND NOT EXISTS (SELECT FROM erasures e WHERE e.user_id = r.user_id) THEN
      SELECT * INTO m FROM messages mm
      WHERE mm.chat_id = r.chat_id AND mm.id > coalesce(r.last_read_message_id, 0)
        AND mm.sender_id <> r.user_id AND mm.deleted_at IS NULL
      ORDER BY mm.id DESC LIMIT 1;
    END IF;
    IF m.id IS NULL THEN
      UPDATE chat_participants p SET unread_since = NULL WHERE p.chat_id = r.chat_id AND p.user_id = r.user_id;
      CONTINUE;
    END IF;
    v_message := jsonb_set(lc_message_json(m), '{content}', to_jsonb(left(m.content, 200)));
    INSERT INTO webhook_deliveries (type, next_attempt_at, data)
    VALUES ('notification.unread', '-infinity', jsonb_build_object('user_id', r.user_id, 'chat_id', r.chat_id,
      'unread_count', r.unread_count, 'last_message', v_message));
    UPDATE chat_participants p SET unread_since = NULL, unread_notified = true
    WHERE p.chat_id = r.chat_id AND p.user_id = r.user_id;
    v_recorded := v_recorded + 1;
  END LOOP;
  RETURN v_recorded;
END
$$;
