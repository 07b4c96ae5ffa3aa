-- Records, in the caller's transaction, that the chats of listing `p_listing_id` are to hear of its change
-- (chat_updated), when it has any: a range scan of chats_listing_buyer_seller_key's prefix that stops at the
-- first. A fan-out under way starts over (its chats heard the change before this one, not this one).
CREATE OR REPLACE FUNCTION lc_request_listing_fanout(p_listing_id bigint) RETURNS void LANGUAGE sql AS $$
  INSERT INTO listing_fanouts AS f (listing_id, after_buyer_id, requested_at)
  SELECT p_listing_id, 0, now() WHERE EXISTS (SELECT FROM chats c WHERE c.listing_id = p_listing_id)
  ON CONFLICT (listing_id) DO UPDATE SET after_buyer_id = 0, requested_at = excluded.requested_at
$$;
