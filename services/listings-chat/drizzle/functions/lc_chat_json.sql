-- migrate: after lc_iso
-- A chat as the API shows it (db/rows.ts toChat).
CREATE OR REPLACE FUNCTION lc_chat_json(c chats) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', c.id, 'listing_id', c.listing_id, 'buyer_id', c.buyer_id, 'seller_id', c.seller_id,
    'created_at', lc_iso(c.created_at), 'last_activity_at', lc_iso(c.last_activity_at))
$$;
