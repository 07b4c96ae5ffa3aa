-- migrate: after lc_chat_listing_json, lc_peer_text
-- What a chat shows around its own fields, as `p_viewer` sees it now (CONTRACT §8): its listing (null while
-- unregistered), the other participant's name and avatar (null while unknown), and whether the viewer archived
-- it. Three key lookups. lc_chat_view puts it beside the chat's fields; lc_stream_page beside the fields an
-- event stored.
CREATE OR REPLACE FUNCTION lc_chat_context(c chats, p_viewer bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'listing', (SELECT lc_chat_listing_json(l) FROM listings l WHERE l.id = c.listing_id),
    'peer', (SELECT lc_peer_text(v.peer_id, pp.display_name, pp.avatar_url)::jsonb
             FROM (SELECT CASE WHEN c.buyer_id = p_viewer THEN c.seller_id ELSE c.buyer_id END AS peer_id) v
             LEFT JOIN people pp ON pp.user_id = v.peer_id),
    'archived', coalesce((SELECT p.archived FROM chat_participants p WHERE p.chat_id = c.id AND p.user_id = p_viewer), false))
$$;
