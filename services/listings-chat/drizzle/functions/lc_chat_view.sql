-- migrate: after lc_chat_json, lc_chat_listing_json, lc_peer_text
-- A chat as `p_viewer` sees it (CONTRACT §8): lc_chat_json's fields, its listing (null while unregistered),
-- the other participant's name and avatar (null while unknown) and whether the viewer archived it. Three key
-- lookups. What `POST /api/v1/chats` answers, and what chat_created and chat_updated carry (built for each
-- participant when they are written, and again as they are now when a stream is read: lc_stream_page).
-- lc_chat_list builds the same shape inline, for a page of chats in one statement.
CREATE OR REPLACE FUNCTION lc_chat_view(c chats, p_viewer bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT lc_chat_json(c) || jsonb_build_object(
    'listing', (SELECT lc_chat_listing_json(l) FROM listings l WHERE l.id = c.listing_id),
    'peer', (SELECT lc_peer_text(v.peer_id, pp.display_name, pp.avatar_url)::jsonb
             FROM (SELECT CASE WHEN c.buyer_id = p_viewer THEN c.seller_id ELSE c.buyer_id END AS peer_id) v
             LEFT JOIN people pp ON pp.user_id = v.peer_id),
    'archived', coalesce((SELECT p.archived FROM chat_participants p WHERE p.chat_id = c.id AND p.user_id = p_viewer), false))
$$;
