-- The two reads every page makes (this one and lc_unread), as one statement each that answers the API's JSON
-- as text: Node passes it through without parsing a row or building an object (for a seller's 100 chats that
-- was most of the request's CPU), and PL/pgSQL keeps each plan for the session.
--
-- `GET /api/v1/chats`: the user's `p_limit` most recently active chats, each with its newest message (kept
-- on the chat), the user's unread count and how far the other participant has read. A range scan of
-- chat_participants_user_activity_idx that stops at the page's end, then key lookups.
CREATE OR REPLACE FUNCTION lc_chat_list(p_user_id bigint, p_limit integer) RETURNS text LANGUAGE plpgsql STABLE AS $$
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
