-- migrate: after lc_chat_listing_text, lc_iso, lc_peer_text
-- The two reads every page makes (this one and lc_unread), as one statement each that answers the API's JSON
-- as text: Node passes it through without parsing a row or building an object (for a seller's 100 chats that
-- was most of the request's CPU), and PL/pgSQL keeps each plan for the session.
--
-- `GET /api/v1/chats`: the user's `p_limit` most recently active chats, each with its newest message (kept
-- on the chat), the user's unread count and how far the other participant has read. A range scan of
-- chat_participants_user_activity_idx that stops at the page's end, then key lookups.
--
-- With `p_archived` (CONTRACT §8): the chats the user archived (a range scan of the partial index
-- chat_participants_user_archived_idx), or those not archived (the activity index, skipping archived rows:
-- archived chats are the quiet ones, below the first page, until a message brings one back to the top). Each
-- chat with its listing (null while unregistered) and the other participant's name (null while unknown): two
-- more key lookups per chat, in the same statement, each for a json value stored with its row (pgbench, the
-- seeded seller's 100-chat page: 1.0 ms before listing and peer, 2.0–2.4 building the two objects per chat,
-- 1.8–2.0 embedding the stored ones; the rest is the lookups and twice the bytes).
CREATE OR REPLACE FUNCTION lc_chat_list(p_user_id bigint, p_limit integer, p_archived boolean) RETURNS text
LANGUAGE plpgsql STABLE
-- One plan per statement for the session. The page's chats come in as arrays, whose length the generic plan
-- cannot know: a custom plan for a user with one chat looked cheaper than the generic one, so the 7-table join
-- was planned again at every call (0.85 ms for a one-chat list, 0.22 with this; the plan is the same
-- nested loop of key lookups either way).
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
  v_chat_ids bigint[];
  v_unread integer[];
BEGIN
  -- Two statements, not one with `archived = p_archived`: a plan kept for the session must see the partial
  -- index's predicate as a constant to use it.
  IF p_archived THEN
    SELECT array_agg(p.chat_id ORDER BY p.last_activity_at DESC, p.chat_id DESC),
      array_agg(p.unread_count ORDER BY p.last_activity_at DESC, p.chat_id DESC) INTO v_chat_ids, v_unread
    FROM (SELECT p.chat_id, p.unread_count, p.last_activity_at FROM chat_participants p
          WHERE p.user_id = p_user_id AND p.archived
          ORDER BY p.last_activity_at DESC, p.chat_id DESC LIMIT p_limit) p;
  ELSE
    SELECT array_agg(p.chat_id ORDER BY p.last_activity_at DESC, p.chat_id DESC),
      array_agg(p.unread_count ORDER BY p.last_activity_at DESC, p.chat_id DESC) INTO v_chat_ids, v_unread
    FROM (SELECT p.chat_id, p.unread_count, p.last_activity_at FROM chat_participants p
          WHERE p.user_id = p_user_id AND NOT p.archived
          ORDER BY p.last_activity_at DESC, p.chat_id DESC LIMIT p_limit) p;
  END IF;
  -- Rows made into JSON by row_to_json/json_agg: compact, in the columns' order.
  RETURN (
    SELECT json_build_object('chats', coalesce(json_agg(summary ORDER BY page.ord), '[]'::json))::text
    FROM unnest(v_chat_ids, v_unread) WITH ORDINALITY AS page(chat_id, unread_count, ord)
    JOIN chats c ON c.id = page.chat_id
    LEFT JOIN messages m ON m.id = c.last_message_id
    LEFT JOIN chat_participants peer ON peer.chat_id = c.id
      AND peer.user_id = CASE WHEN c.buyer_id = p_user_id THEN c.seller_id ELSE c.buyer_id END
    LEFT JOIN people pp ON pp.user_id = peer.user_id
    LEFT JOIN listings l ON l.id = c.listing_id
    CROSS JOIN LATERAL (
      SELECT c.id, c.listing_id, c.buyer_id, c.seller_id,
        lc_iso(c.created_at) AS created_at, lc_iso(c.last_activity_at) AS last_activity_at,
        -- As stored with the listing and the person (json: output as it is); built only for a listing
        -- registered before 0023 and not yet filled, and for a person the platform never named.
        CASE WHEN l.id IS NOT NULL THEN coalesce(l.chat_json,
          lc_chat_listing_text(l.id, l.title, l.price_minor, l.currency, l.image_url, l.url, l.status)) END AS listing,
        coalesce(pp.peer_json, lc_peer_text(peer.user_id, NULL, NULL)) AS peer,
        p_archived AS archived,
        (SELECT row_to_json(last) FROM (
          -- As lc_message_json: the platform's sender (0) is null; deleted: no content, no data.
          SELECT m.id, m.chat_id, nullif(m.sender_id, 0) AS sender_id, m.kind,
            CASE WHEN m.deleted_at IS NULL THEN m.content ELSE '' END AS content,
            CASE WHEN m.deleted_at IS NULL THEN m.data END AS data,
            '[]'::json AS attachments,
            m.client_msg_id, lc_iso(m.created_at) AS created_at,
            lc_iso(m.edited_at) AS edited_at, lc_iso(m.deleted_at) AS deleted_at,
            CASE WHEN m.deleted_at IS NOT NULL THEN coalesce(m.deleted_by, 'sender') END AS deleted_by
          WHERE m.id IS NOT NULL
        ) last) AS last_message,
        page.unread_count,
        peer.last_read_message_id AS peer_last_read_message_id
    ) summary
  );
END
$$;
--> statement-breakpoint
-- The two-argument form (the release before 0023's callers): the chats not archived.
CREATE OR REPLACE FUNCTION lc_chat_list(p_user_id bigint, p_limit integer) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT lc_chat_list(p_user_id, p_limit, false)
$$;
