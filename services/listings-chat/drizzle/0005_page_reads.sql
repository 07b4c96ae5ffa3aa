-- The two reads every page makes, as one statement each that answers the API's JSON as text: Node passes
-- it through without parsing a row or building an object (for a seller's 100 chats that was most of the
-- request's CPU), and PL/pgSQL keeps each plan for the session.

-- `GET /api/v1/chats`: the user's `p_limit` most recently active chats, each with its newest message (kept
-- on the chat), the user's unread count and how far the other participant has read. A range scan of
-- chat_participants_user_activity_idx that stops at the page's end, then key lookups.
CREATE FUNCTION lc_chat_list(p_user_id bigint, p_limit integer) RETURNS text LANGUAGE plpgsql STABLE AS $$
BEGIN
  -- Rows made into JSON by row_to_json/json_agg: compact, in the columns' order.
  RETURN (
    SELECT json_build_object('chats',
      coalesce(json_agg(summary ORDER BY page.last_activity_at DESC, page.chat_id DESC), '[]'::json))::text
    FROM (
      SELECT p.chat_id, p.unread_count, p.last_activity_at FROM chat_participants p
      WHERE p.user_id = p_user_id
      ORDER BY p.last_activity_at DESC, p.chat_id DESC
      LIMIT p_limit
    ) page
    JOIN chats c ON c.id = page.chat_id
    LEFT JOIN messages m ON m.id = c.last_message_id
    LEFT JOIN chat_participants peer ON peer.chat_id = c.id
      AND peer.user_id = CASE WHEN c.buyer_id = p_user_id THEN c.seller_id ELSE c.buyer_id END
    CROSS JOIN LATERAL (
      SELECT c.id, c.listing_id, c.buyer_id, c.seller_id,
        lc_iso(c.created_at) AS created_at, lc_iso(c.last_activity_at) AS last_activity_at,
        (SELECT row_to_json(last) FROM (
          SELECT m.id, m.chat_id, m.sender_id,
            -- A deleted message keeps its id and loses its content.
            CASE WHEN m.deleted_at IS NULL THEN m.content ELSE '' END AS content,
            m.client_msg_id, lc_iso(m.created_at) AS created_at,
            lc_iso(m.edited_at) AS edited_at, lc_iso(m.deleted_at) AS deleted_at
          WHERE m.id IS NOT NULL
        ) last) AS last_message,
        page.unread_count,
        peer.last_read_message_id AS peer_last_read_message_id
    ) summary
  );
END
$$;
--> statement-breakpoint
-- `GET /api/v1/chats/unread`: the user's total (kept on their stream row) and the counts of their `p_limit`
-- most recently active chats with something unread (a range scan of the partial index
-- chat_participants_user_unread_idx), as {"total": 3, "chats": {"12": 2, "15": 1}}.
CREATE FUNCTION lc_unread(p_user_id bigint, p_limit integer) RETURNS text LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN json_build_object(
    'total', coalesce((SELECT s.unread_total FROM user_streams s WHERE s.user_id = p_user_id), 0),
    'chats', coalesce((
      SELECT json_object_agg(u.chat_id, u.unread_count)
      FROM (
        SELECT p.chat_id, p.unread_count FROM chat_participants p
        WHERE p.user_id = p_user_id AND p.unread_count > 0
        ORDER BY p.last_activity_at DESC, p.chat_id DESC
        LIMIT p_limit
      ) u
    ), '{}'::json)
  )::text;
END
$$;
--> statement-breakpoint
-- A page of `p_user_id`'s stream after `p_after` (up to `p_up_to` when given), oldest first: at most
-- `p_max_events` events and, after the first, no more than `p_max_bytes` of payload, so that a page of long
-- messages is as light as a page of short ones (a replay writes a page, waits for the socket to drain, reads
-- the next). A range scan of the stream's key that stops at the page's end. When the bytes cut the page
-- short, a last row with a NULL type says so (its event_id is the first one left out); when the count
-- does, the caller knows from the count. A message's events carry the message as it is now (edited, or
-- deleted: empty), read from the message itself; the events do not keep a copy (see 0006).
CREATE FUNCTION lc_stream_page(p_user_id bigint, p_after bigint, p_up_to bigint, p_max_events integer, p_max_bytes integer)
RETURNS TABLE (event_id bigint, type text, payload jsonb) LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
  v_bytes bigint := 0;
  v_count integer := 0;
BEGIN
  FOR event_id, type, payload IN
    SELECT ue.event_id, ce.type,
      CASE WHEN ce.type IN ('new_message', 'message_edited', 'message_deleted') AND m.id IS NOT NULL
        THEN ce.payload || jsonb_build_object('message', lc_message_json(m))
        ELSE ce.payload END
    FROM user_events ue JOIN chat_events ce ON ce.id = ue.chat_event_id
    LEFT JOIN messages m ON m.id = ce.message_id
    WHERE ue.user_id = p_user_id AND ue.event_id > p_after
      AND ue.event_id <= coalesce(p_up_to, 9223372036854775807)
    ORDER BY ue.event_id
    LIMIT p_max_events
  LOOP
    v_bytes := v_bytes + octet_length(payload::text);
    IF v_count > 0 AND v_bytes > p_max_bytes THEN
      type := NULL;
      payload := NULL;
      RETURN NEXT;
      RETURN;
    END IF;
    v_count := v_count + 1;
    RETURN NEXT;
  END LOOP;
END
$$;
