-- migrate: after lc_webhooks_on, lc_webhook_chat_json, lc_append_events, lc_blocked, lc_chat_json, lc_chat_view, lc_listing_key, lc_pair_key, lc_suspended
-- The chat of (listing, buyer, seller), created with its two participants on first contact.
-- created is false when it existed (or a concurrent call created it first); when true there is one row per
-- participant, with the event ids of its chat_created event. (0003) Refusing (`blocked` true, no chat) while
-- either of the two blocks the other, whether the chat exists or not: opening is how one contacts a seller,
-- and the existing chat stays readable through its reads. (0008)
--
-- The listing is checked first, under its lock (lc_listing_key): a registered
-- listing opens chats only with its seller and not once removed; an unregistered one only while
-- `p_listings_required` is false. With `p_create` false nothing is created: the existing chat is answered
-- after the same checks, or `absent` (the path of a buyer past CHAT_OPEN_LIMIT_PER_HOUR). One status instead
-- of 0008's flags:
--   created, existing (with the chat), absent, blocked, listing_not_found, listing_closed. (0009)
--
-- Each row's chat as that row's user sees it (lc_chat_view: listing, the other's name, archived): the buyer's
-- row first, and an `existing` chat as the buyer sees it. The six-argument form: with `p_check_suspension`,
-- `suspended` while the platform suspends the buyer (lc_suspended), checked first; the five-argument form (the
-- release before's callers, which know no `suspended`) is this without the check. (0023)
--
-- Webhooks (0027): while lc_webhooks_on(), a new chat's `chat.created`.
CREATE OR REPLACE FUNCTION lc_open_chat(p_listing_id bigint, p_buyer_id bigint, p_seller_id bigint, p_listings_required boolean,
  p_create boolean, p_check_suspension boolean)
RETURNS TABLE (status text, chat jsonb, user_id bigint, event_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  c chats;
  l listings;
  v_json jsonb;
BEGIN
  IF p_check_suspension AND lc_suspended(p_buyer_id) THEN
    status := 'suspended'; RETURN NEXT; RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock_shared(1011, lc_listing_key(p_listing_id));
  SELECT * INTO l FROM listings ll WHERE ll.id = p_listing_id;
  IF FOUND THEN
    IF l.seller_id <> p_seller_id THEN
      status := 'listing_not_found'; RETURN NEXT; RETURN;
    END IF;
    IF l.status = 'removed' THEN
      status := 'listing_closed'; RETURN NEXT; RETURN;
    END IF;
  ELSIF p_listings_required THEN
    status := 'listing_not_found'; RETURN NEXT; RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock_shared(1010, lc_pair_key(p_buyer_id, p_seller_id));
  IF lc_blocked(p_buyer_id, p_seller_id) THEN
    status := 'blocked'; RETURN NEXT; RETURN;
  END IF;
  SELECT * INTO c FROM chats cc
  WHERE cc.listing_id = p_listing_id AND cc.buyer_id = p_buyer_id AND cc.seller_id = p_seller_id;
  IF FOUND THEN
    status := 'existing'; chat := lc_chat_view(c, p_buyer_id); RETURN NEXT; RETURN;
  END IF;
  IF NOT p_create THEN
    status := 'absent'; RETURN NEXT; RETURN;
  END IF;
  INSERT INTO chats AS cc (listing_id, buyer_id, seller_id) VALUES (p_listing_id, p_buyer_id, p_seller_id)
  ON CONFLICT DO NOTHING
  RETURNING cc.* INTO c;
  IF NOT FOUND THEN
    -- A concurrent call created it between the look above and this insert (and has committed).
    SELECT * INTO c FROM chats cc
    WHERE cc.listing_id = p_listing_id AND cc.buyer_id = p_buyer_id AND cc.seller_id = p_seller_id;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'chat (%, %, %) neither inserted nor found', p_listing_id, p_buyer_id, p_seller_id;
    END IF;
    status := 'existing'; chat := lc_chat_view(c, p_buyer_id); RETURN NEXT; RETURN;
  END IF;
  INSERT INTO chat_participants (chat_id, user_id, role, last_activity_at)
  VALUES (c.id, p_buyer_id, 'buyer', c.last_activity_at), (c.id, p_seller_id, 'seller', c.last_activity_at);
  v_json := lc_chat_json(c);
  IF lc_webhooks_on() THEN
    INSERT INTO webhook_deliveries (type, data)
    VALUES ('chat.created', jsonb_build_object('chat', lc_webhook_chat_json(c)));
  END IF;
  -- The stored payload keeps lc_chat_json's fields (what a reader of the release before shows); readers of
  -- this one build each user's view (lc_stream_page).
  RETURN QUERY
  SELECT 'created'::text, lc_chat_view(c, a.user_id), a.user_id, a.event_id
  FROM lc_append_events(ARRAY[c.id], ARRAY['chat_created'], ARRAY[NULL::bigint],
    ARRAY[jsonb_build_object('chat', v_json)]) AS a
  ORDER BY a.user_id <> p_buyer_id;
END
$$;
--> statement-breakpoint
-- The five-argument form: as the release before 0023 called it, no suspension checked.
CREATE OR REPLACE FUNCTION lc_open_chat(p_listing_id bigint, p_buyer_id bigint, p_seller_id bigint, p_listings_required boolean,
  p_create boolean)
RETURNS TABLE (status text, chat jsonb, user_id bigint, event_id bigint) LANGUAGE sql AS $$
  SELECT * FROM lc_open_chat(p_listing_id, p_buyer_id, p_seller_id, p_listings_required, p_create, false)
$$;
