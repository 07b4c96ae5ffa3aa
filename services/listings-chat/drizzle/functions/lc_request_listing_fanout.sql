-- Records, in the caller's transaction, that the chats of listing `p_listing_id` are to hear of its change
-- (chat_updated), when it has any: a range scan of chats_listing_buyer_seller_key's prefix that stops at the
-- first. A fan-out already under way keeps its cursor and its place in the queue and is marked to run once more
-- from the first chat when it reaches the last (`rerun`): the chats after its cursor will read the new state,
-- the ones before it hear it on the rerun, and a listing that changes faster than a pass still reaches all.
CREATE OR REPLACE FUNCTION lc_request_listing_fanout(p_listing_id bigint) RETURNS void LANGUAGE sql AS $$
  INSERT INTO listing_fanouts AS f (listing_id, after_buyer_id, rerun, requested_at)
  SELECT p_listing_id, 0, false, now() WHERE EXISTS (SELECT FROM chats c WHERE c.listing_id = p_listing_id)
  ON CONFLICT (listing_id) DO UPDATE SET rerun = f.after_buyer_id > 0
$$;
