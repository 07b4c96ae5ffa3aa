-- migrate: after lc_iso
-- A listing as the platform's PUT answers it.
CREATE OR REPLACE FUNCTION lc_listing_json(l listings) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', l.id, 'seller_id', l.seller_id, 'title', l.title, 'price_minor', l.price_minor,
    'currency', l.currency, 'image_url', l.image_url, 'url', l.url, 'status', l.status,
    'created_at', lc_iso(l.created_at), 'updated_at', lc_iso(l.updated_at))
$$;
