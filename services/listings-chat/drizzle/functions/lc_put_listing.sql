-- migrate: after lc_chat_listing_text, lc_listing_json, lc_listing_key, lc_request_listing_fanout
-- The platform registers or changes a listing (upsert). Status: created, updated, unchanged (the same body
-- again: nothing written, `updated_at` as it was, so a retried PUT is harmless), seller_mismatch (a chat on it
-- has another seller: nothing stored). Once registered, opens keep its chats to its seller, so the chats are
-- scanned only when the seller is new to it: at its first registration (chats opened before it, while
-- LISTINGS_REQUIRED was 0: a range scan of chats_listing_buyer_seller_key's prefix) and on a change of
-- seller (then any chat at all is another seller's: the scan stops at the first).
--
-- A change, and a first registration of a listing that already has chats (opened while LISTINGS_REQUIRED was
-- 0: they showed no listing), is to reach every participant of its chats as chat_updated: recorded here, in the
-- transaction of the change, for lc_listing_fanout_step to tell them a batch at a time. And the listing as chats
-- show it, stored with it (`chat_json`), for the chat list to embed. (0023)
CREATE OR REPLACE FUNCTION lc_put_listing(p_id bigint, p_seller_id bigint, p_title text, p_price_minor bigint, p_currency text,
  p_image_url text, p_url text, p_status text)
RETURNS TABLE (status text, listing jsonb) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  l listings;
  v_registered boolean;
BEGIN
  PERFORM pg_advisory_xact_lock(1011, lc_listing_key(p_id));
  SELECT * INTO l FROM listings ll WHERE ll.id = p_id;
  v_registered := FOUND;
  IF (NOT v_registered OR l.seller_id <> p_seller_id)
     AND EXISTS (SELECT FROM chats c WHERE c.listing_id = p_id AND c.seller_id <> p_seller_id) THEN
    status := 'seller_mismatch'; RETURN NEXT; RETURN;
  END IF;
  IF NOT v_registered THEN
    INSERT INTO listings (id, seller_id, title, price_minor, currency, image_url, url, status, chat_json)
    VALUES (p_id, p_seller_id, p_title, p_price_minor, p_currency, p_image_url, p_url, p_status,
      lc_chat_listing_text(p_id, p_title, p_price_minor, p_currency, p_image_url, p_url, p_status))
    RETURNING * INTO l;
    PERFORM lc_request_listing_fanout(p_id);
    status := 'created'; listing := lc_listing_json(l); RETURN NEXT; RETURN;
  END IF;
  UPDATE listings ll SET seller_id = p_seller_id, title = p_title, price_minor = p_price_minor,
    currency = p_currency, image_url = p_image_url, url = p_url, status = p_status, updated_at = now(),
    chat_json = lc_chat_listing_text(p_id, p_title, p_price_minor, p_currency, p_image_url, p_url, p_status)
  WHERE ll.id = p_id
    AND (ll.seller_id, ll.title, ll.price_minor, ll.currency, ll.image_url, ll.url, ll.status)
      IS DISTINCT FROM (p_seller_id, p_title, p_price_minor, p_currency, p_image_url, p_url, p_status)
  RETURNING * INTO l;
  IF FOUND THEN
    PERFORM lc_request_listing_fanout(p_id);
    status := 'updated';
  ELSE
    status := 'unchanged';
    SELECT * INTO l FROM listings ll WHERE ll.id = p_id;
  END IF;
  listing := lc_listing_json(l); RETURN NEXT;
END
$$;
