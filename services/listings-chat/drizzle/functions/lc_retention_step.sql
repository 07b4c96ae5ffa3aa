-- One batch of MESSAGE_RETENTION_DAYS (CONTRACT §12; personal-data/retention.ts), in a transaction of its own: of
-- the next `p_batch` messages by id after `p_after` (a range of the key: ids grow with time, so the oldest come
-- first), those created before `p_cutoff` are deleted, and what the write functions keep about them with them:
--   - a recipient's unread count loses each removed message they had not read (not theirs, above their read marker,
--     not deleted), never below zero, and their stream row's total the same; a count that reaches zero clears the
--     unread reminder's clock and its "sent" mark, as a read would;
--   - the photos of a removed message become due for the sweeper (media/sweeper.ts), which removes their objects,
--     then the rows: a DELETE does not fire lc_release_message_photos (it fires on UPDATE OF deleted_at).
-- No event is appended: removing what is older than the retention is not a change anyone is told of. The events of
-- these messages go with all events of that age (lc_retention_events_step); one that is younger than the message
-- (an edit or a delete of it, within the retention) reads it as deleted (lc_stream_page). `chats.last_message_id`
-- may be left naming a removed message: the chat list shows `last_message` null.
-- Returns how many messages were removed, how many unread counts they took, how many uploads were made due, the last
-- id looked at (the next batch's `p_after`) and whether the batch reached a message newer than the cutoff or the
-- end of the table (`done`: the next batch would find nothing older).
-- Locks, in the order every write keeps (functions/README.md), so that it never deadlocks with a send: the batch's
-- chats (ascending id, FOR NO KEY UPDATE, as a send's update of the chat), their participants, the messages, their
-- uploads (as lc_release_message_photos, after the message), the stream rows in ascending user id last.
CREATE OR REPLACE FUNCTION lc_retention_step(p_cutoff timestamptz, p_after bigint, p_batch integer)
RETURNS TABLE (removed integer, unread bigint, photos integer, last_id bigint, done boolean) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_seen integer;
  v_newer boolean;
  v_ids bigint[];
  v_chats bigint[];
  -- The participants of the batch's chats, as their locked rows have them.
  r_chat bigint[];
  r_user bigint[];
  r_read bigint[];
  r_count integer[];
  -- The messages removed, as the DELETE found them (a concurrent edit or delete committed first is seen).
  g_id bigint[];
  g_chat bigint[];
  g_sender bigint[];
  g_live boolean[];
  g_photos bigint[];
  -- Each recipient's unread count to take off, per chat.
  d_chat bigint[];
  d_user bigint[];
  d_count integer[];
BEGIN
  SELECT count(*), coalesce(bool_or(m.created_at >= p_cutoff), false), coalesce(max(m.id), p_after),
    array_agg(m.id ORDER BY m.id) FILTER (WHERE m.created_at < p_cutoff),
    array_agg(DISTINCT m.chat_id) FILTER (WHERE m.created_at < p_cutoff)
  INTO v_seen, v_newer, last_id, v_ids, v_chats
  FROM (SELECT mm.id, mm.chat_id, mm.created_at FROM messages mm WHERE mm.id > p_after ORDER BY mm.id LIMIT p_batch) m;
  done := v_newer OR v_seen < p_batch;
  removed := 0; unread := 0; photos := 0;
  IF v_ids IS NULL THEN
    RETURN NEXT; RETURN;
  END IF;
  PERFORM FROM chats c WHERE c.id = ANY(v_chats) ORDER BY c.id FOR NO KEY UPDATE;
  SELECT array_agg(p.chat_id ORDER BY p.chat_id, p.user_id), array_agg(p.user_id ORDER BY p.chat_id, p.user_id),
    array_agg(p.last_read_message_id ORDER BY p.chat_id, p.user_id), array_agg(p.unread_count ORDER BY p.chat_id, p.user_id)
  INTO r_chat, r_user, r_read, r_count
  FROM (SELECT pp.chat_id, pp.user_id, pp.last_read_message_id, pp.unread_count FROM chat_participants pp
        WHERE pp.chat_id = ANY(v_chats) ORDER BY pp.chat_id, pp.user_id FOR UPDATE) p;
  WITH gone AS (
    -- created_at again: the batch was read before any lock was taken.
    DELETE FROM messages mm WHERE mm.id = ANY(v_ids) AND mm.created_at < p_cutoff
    RETURNING mm.id, mm.chat_id, mm.sender_id, mm.deleted_at IS NULL AS live,
      mm.attachments IS NOT NULL AND mm.deleted_at IS NULL AS with_photos
  )
  SELECT array_agg(g.id), array_agg(g.chat_id), array_agg(g.sender_id), array_agg(g.live),
    array_agg(g.id) FILTER (WHERE g.with_photos)
  INTO g_id, g_chat, g_sender, g_live, g_photos
  FROM gone g;
  removed := coalesce(cardinality(g_id), 0);
  IF removed = 0 THEN
    RETURN NEXT; RETURN;
  END IF;
  IF g_photos IS NOT NULL THEN
    UPDATE uploads u SET sweep_after = now() WHERE u.message_id = ANY(g_photos);
    GET DIAGNOSTICS photos = ROW_COUNT;
  END IF;
  -- What each recipient had unread of the removed messages, never more than their count holds.
  SELECT array_agg(x.chat_id), array_agg(x.user_id), array_agg(x.n) INTO d_chat, d_user, d_count
  FROM (SELECT p.chat_id, p.user_id, least(count(*), p.unread_count)::integer AS n
        FROM unnest(r_chat, r_user, r_read, r_count) AS p(chat_id, user_id, last_read, unread_count)
        JOIN unnest(g_id, g_chat, g_sender, g_live) AS g(id, chat_id, sender_id, live)
          ON g.chat_id = p.chat_id AND g.live AND g.sender_id <> p.user_id AND g.id > coalesce(p.last_read, 0)
        GROUP BY p.chat_id, p.user_id, p.unread_count) x
  WHERE x.n > 0;
  IF d_user IS NULL THEN
    RETURN NEXT; RETURN;
  END IF;
  UPDATE chat_participants p SET unread_count = p.unread_count - d.n,
    unread_since = CASE WHEN p.unread_count = d.n THEN NULL ELSE p.unread_since END,
    unread_notified = p.unread_notified AND p.unread_count <> d.n
  FROM unnest(d_chat, d_user, d_count) AS d(chat_id, user_id, n)
  WHERE p.chat_id = d.chat_id AND p.user_id = d.user_id;
  unread := (SELECT sum(n) FROM unnest(d_count) AS n);
  -- The stream rows last, in ascending user id, as every writer takes them.
  PERFORM FROM user_streams s WHERE s.user_id = ANY(d_user) ORDER BY s.user_id FOR NO KEY UPDATE;
  UPDATE user_streams s SET unread_total = greatest(s.unread_total - t.n, 0)
  FROM (SELECT d.user_id, sum(d.n) AS n FROM unnest(d_user, d_count) AS d(user_id, n) GROUP BY d.user_id) t
  WHERE s.user_id = t.user_id;
  RETURN NEXT;
END
$$;
