-- The event ids' sequence looked up by name each time lc_append_events runs, instead of once when its statement
-- is planned. 0021 replaces chat_events_id_seq with a sequence of the same name (the identity's cannot be
-- attached as a partition); a session that planned the statement just before (0019's validation invalidates
-- it) and then waited for 0021's locks would keep the old sequence's OID in a plan that is never invalidated
-- again, and fail with "could not open relation with OID …" on every call after (seen under the probe of
-- online-migrations.integration.test.ts). Same signature and result: the release before calls it as before.
-- The same body as drizzle/functions/lc_append_events.sql, which the runner applies after the versioned files;
-- it is here because 0021 needs it in place first.
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
