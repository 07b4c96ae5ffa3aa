-- migrate: after lc_chat_listing_text
-- The listing a chat is about, as chats show it (CONTRACT §8): what a participant needs, not the platform's
-- bookkeeping (seller, times). As jsonb, for one chat at a time (lc_chat_view); the chat list embeds the json
-- text lc_put_listing stored (`listings.chat_json`). One shape: lc_chat_listing_text's.
CREATE OR REPLACE FUNCTION lc_chat_listing_json(l listings) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT lc_chat_listing_text(l.id, l.title, l.price_minor, l.currency, l.image_url, l.url, l.status)::jsonb
$$;
