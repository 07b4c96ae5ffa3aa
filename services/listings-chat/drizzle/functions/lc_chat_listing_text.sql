-- The listing as chats show it (lc_chat_listing_json's keys, in its order) as compact json text, from its fields:
-- what lc_put_listing stores in `listings.chat_json`.
CREATE OR REPLACE FUNCTION lc_chat_listing_text(p_id bigint, p_title text, p_price_minor bigint, p_currency text,
  p_image_url text, p_url text, p_status text) RETURNS json LANGUAGE sql IMMUTABLE AS $$
  SELECT row_to_json(v) FROM (
    SELECT p_id AS id, p_title AS title, p_price_minor AS price_minor, p_currency AS currency,
      p_image_url AS image_url, p_url AS url, p_status AS status
  ) v
$$;
