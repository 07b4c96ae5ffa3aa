-- The listing a chat is about, as chats show it (CONTRACT §8): what a participant needs, not the platform's
-- bookkeeping (seller, times).
CREATE OR REPLACE FUNCTION lc_chat_listing_json(l listings) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', l.id, 'title', l.title, 'price_minor', l.price_minor, 'currency', l.currency,
    'image_url', l.image_url, 'url', l.url, 'status', l.status)
$$;
