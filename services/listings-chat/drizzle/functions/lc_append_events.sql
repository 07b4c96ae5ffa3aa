-- Appends events (the i-th of each array is one event) to the streams of their chat's two participants,
-- in the caller's transaction: each change is stored once in chat_events, each participant's stream end
-- is bumped once for all of that user's events here (rows taken in ascending user id), and each user gets
-- their events' ids in the order of the arrays. The row locks on user_streams are held until commit, so one
-- user's ids are handed out in commit order and a rollback gives them back: each stream stays dense.
-- Returns, for each event (ord = its index in the arrays) and each participant, that user's event_id. (0003)
-- Each message's content is stored once, in its row: events about a message keep who, where and when, and
-- are read together with the message as it is now (lc_stream_page). (0006)
--
-- The six-argument form (0010): each user's unread total moved by `p_unread_deltas` (per user of
-- `p_unread_user_ids`, summed when one is named twice) in the same upsert of their stream row: one row
-- version per write, where the total was a second UPDATE after it. Only participants of the events' chats may
-- be named (others are not addressed, and their deltas would be dropped). A user with no stream row has no
-- unread counts (lc_open_chat's chat_created gave both of a chat's participants theirs), so a negative delta
-- only ever meets an existing row; the total is kept from going below zero, as before.
-- The sequence is named as text and looked up when the statement runs, not when it is planned (0020).
CREATE OR REPLACE FUNCTION lc_append_events(p_chat_ids bigint[], p_types text[], p_message_ids bigint[], p_payloads jsonb[],
  p_unread_user_ids bigint[], p_unread_deltas bigint[])
RETURNS TABLE (ord bigint, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH ev AS MATERIALIZED (
    SELECT e.ord, nextval('chat_events_id_seq'::text::regclass) AS id, e.chat_id, e.type, e.message_id, e.payload,
      c.buyer_id, c.seller_id
    FROM unnest(p_chat_ids, p_types, p_message_ids, p_payloads) WITH ORDINALITY
      AS e(chat_id, type, message_id, payload, ord)
    JOIN chats c ON c.id = e.chat_id
  ), stored AS (
    INSERT INTO chat_events (id, chat_id, type, message_id, payload)
    SELECT ev.id, ev.chat_id, ev.type, ev.message_id,
      CASE WHEN ev.message_id IS NOT NULL THEN ev.payload - 'message' ELSE ev.payload END
    FROM ev
  ), addressed AS MATERIALIZED (
    SELECT ev.ord, ev.id, u.user_id FROM ev CROSS JOIN LATERAL (VALUES (ev.buyer_id), (ev.seller_id)) AS u(user_id)
  ), unread AS (
    SELECT d.user_id, sum(d.delta)::bigint AS delta
    FROM unnest(p_unread_user_ids, p_unread_deltas) AS d(user_id, delta) GROUP BY d.user_id
  ), bumped AS (
    -- Ascending user id, as every writer of stream rows locks them.
    INSERT INTO user_streams AS s (user_id, last_event_id, unread_total)
    SELECT a.user_id, count(*), coalesce(max(d.delta), 0)
    FROM addressed a LEFT JOIN unread d ON d.user_id = a.user_id
    GROUP BY a.user_id ORDER BY a.user_id
    ON CONFLICT (user_id) DO UPDATE SET last_event_id = s.last_event_id + excluded.last_event_id,
      unread_total = greatest(s.unread_total + excluded.unread_total, 0)
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
-- The four-argument form (edits, opens, and the release before 0010's callers): no unread change, one body.
-- It calls the six-argument form, which is therefore created first (a LANGUAGE sql body is checked when it
-- is created).
CREATE OR REPLACE FUNCTION lc_append_events(p_chat_ids bigint[], p_types text[], p_message_ids bigint[], p_payloads jsonb[])
RETURNS TABLE (ord bigint, user_id bigint, event_id bigint) LANGUAGE sql AS $$
  SELECT a.ord, a.user_id, a.event_id
  FROM lc_append_events(p_chat_ids, p_types, p_message_ids, p_payloads, '{}'::bigint[], '{}'::bigint[]) AS a
$$;
