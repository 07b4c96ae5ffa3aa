-- migrate: after lc_chat_view, lc_webhooks_on, lc_webhook_chat_json, lc_append_events, lc_chat_json
-- One batch of a listing's fan-out (CONTRACT §8: a listing's change reaches every participant of every chat on
-- it as chat_updated), in a transaction of its own so that a listing with 5,000 chats never holds the streams
-- of 10,000 users at once: the oldest fan-out no other instance holds (FOR UPDATE SKIP LOCKED), its next
-- `p_batch` chats in buyer order after its cursor (a registered listing's chats all have its seller:
-- chats_listing_buyer_seller_key's prefix, read from where the last batch stopped), one chat_updated each for
-- both participants, and the cursor moved on; after its last batch the fan-out is removed, or, when the listing
-- changed again during the pass (`rerun`), started over from the first chat at the back of the queue. Status:
--   idle   nothing to do (one row);
--   told   a batch was appended: one row per participant told, with the chat as they see it, and their
--          event_id (one row with no user when the batch found no chat left).
-- Locks: the fan-out's row, then (lc_append_events) the stream rows in ascending user id, last.
--
-- Webhooks (0027): while lc_webhooks_on(), a `chat.updated` per chat told (the chat without a viewer's fields).
CREATE OR REPLACE FUNCTION lc_listing_fanout_step(p_batch integer)
RETURNS TABLE (status text, listing_id bigint, chat jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  f listing_fanouts;
  v_chat_ids bigint[];
  v_last_buyer bigint;
BEGIN
  SELECT * INTO f FROM listing_fanouts ff ORDER BY ff.requested_at, ff.listing_id LIMIT 1 FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    status := 'idle'; RETURN NEXT; RETURN;
  END IF;
  SELECT array_agg(b.id ORDER BY b.buyer_id), max(b.buyer_id) INTO v_chat_ids, v_last_buyer
  FROM (SELECT c.id, c.buyer_id FROM chats c
        WHERE c.listing_id = f.listing_id AND c.buyer_id > f.after_buyer_id
        ORDER BY c.buyer_id LIMIT p_batch) b;
  IF coalesce(cardinality(v_chat_ids), 0) < p_batch AND f.rerun THEN
    UPDATE listing_fanouts ff SET after_buyer_id = 0, rerun = false, requested_at = now()
    WHERE ff.listing_id = f.listing_id;
  ELSIF coalesce(cardinality(v_chat_ids), 0) < p_batch THEN
    DELETE FROM listing_fanouts ff WHERE ff.listing_id = f.listing_id;
  ELSE
    UPDATE listing_fanouts ff SET after_buyer_id = v_last_buyer WHERE ff.listing_id = f.listing_id;
  END IF;
  IF v_chat_ids IS NULL THEN
    status := 'told'; listing_id := f.listing_id; RETURN NEXT; RETURN;
  END IF;
  -- Each event stores its chat's fields as now (what the live event shows); readers add the listing, peer and
  -- archived as they are when the stream is read (lc_stream_page).
  IF lc_webhooks_on() THEN
    INSERT INTO webhook_deliveries (type, data)
    SELECT 'chat.updated', jsonb_build_object('chat', lc_webhook_chat_json(cc))
    FROM unnest(v_chat_ids) WITH ORDINALITY AS u(id, i) JOIN chats cc ON cc.id = u.id ORDER BY u.i;
  END IF;
  RETURN QUERY
  SELECT 'told'::text, f.listing_id, lc_chat_view(c, a.user_id), a.user_id, a.event_id
  FROM lc_append_events(v_chat_ids, array_fill('chat_updated'::text, ARRAY[cardinality(v_chat_ids)]),
    array_fill(NULL::bigint, ARRAY[cardinality(v_chat_ids)]),
    ARRAY(SELECT jsonb_build_object('chat', lc_chat_json(cc)) FROM unnest(v_chat_ids) WITH ORDINALITY AS u(id, i)
          JOIN chats cc ON cc.id = u.id ORDER BY u.i)) AS a
  JOIN chats c ON c.id = v_chat_ids[a.ord];
END
$$;
