CREATE TABLE "listings" (
	"id" bigint PRIMARY KEY NOT NULL,
	"seller_id" bigint NOT NULL,
	"title" text NOT NULL,
	"price_minor" bigint NOT NULL,
	"currency" text NOT NULL,
	"image_url" text,
	"url" text NOT NULL,
	"status" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "listings_status_known" CHECK ("listings"."status" in ('active', 'reserved', 'sold', 'removed')),
	CONSTRAINT "listings_price_not_negative" CHECK ("listings"."price_minor" >= 0)
);
--> statement-breakpoint
-- Listings the platform registers (CONTRACT §8). Online: a new table and new functions; nothing rewrites a
-- table, and the one function replaced in place (lc_send_messages) keeps its signature, so instances of the
-- release before go on working beside this one (see the README, "Changing the schema").
--
-- A listing as the platform's PUT answers it.
CREATE FUNCTION lc_listing_json(l listings) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', l.id, 'seller_id', l.seller_id, 'title', l.title, 'price_minor', l.price_minor,
    'currency', l.currency, 'image_url', l.image_url, 'url', l.url, 'status', l.status,
    'created_at', lc_iso(l.created_at), 'updated_at', lc_iso(l.updated_at))
$$;
--> statement-breakpoint
-- The advisory lock of a listing, in a class of two-int keys of its own (1011; 1010 is the pairs'). Opens on a
-- listing take it shared, so they go on side by side; a PUT of the listing takes it exclusive, so it waits for
-- opens under way to commit and the opens after it read what it stored: no chat is opened on a listing after
-- its removal committed, nor with another seller than the one the PUT checked. A collision only makes two
-- listings wait for each other.
CREATE FUNCTION lc_listing_key(p_listing_id bigint) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT hashint8(p_listing_id)
$$;
--> statement-breakpoint
-- The platform registers or changes a listing (upsert). Status: created, updated, unchanged (the same body
-- again: nothing written, `updated_at` as it was, so a retried PUT is harmless), seller_mismatch (a chat on it
-- has another seller: nothing stored). Once registered, opens keep its chats to its seller, so the chats are
-- scanned only when the seller is new to it: at its first registration (chats opened before it, while
-- LISTINGS_REQUIRED was 0: a range scan of chats_listing_buyer_seller_key's prefix) and on a change of
-- seller (then any chat at all is another seller's: the scan stops at the first).
CREATE FUNCTION lc_put_listing(p_id bigint, p_seller_id bigint, p_title text, p_price_minor bigint, p_currency text,
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
    INSERT INTO listings (id, seller_id, title, price_minor, currency, image_url, url, status)
    VALUES (p_id, p_seller_id, p_title, p_price_minor, p_currency, p_image_url, p_url, p_status)
    RETURNING * INTO l;
    status := 'created'; listing := lc_listing_json(l); RETURN NEXT; RETURN;
  END IF;
  UPDATE listings ll SET seller_id = p_seller_id, title = p_title, price_minor = p_price_minor,
    currency = p_currency, image_url = p_image_url, url = p_url, status = p_status, updated_at = now()
  WHERE ll.id = p_id
    AND (ll.seller_id, ll.title, ll.price_minor, ll.currency, ll.image_url, ll.url, ll.status)
      IS DISTINCT FROM (p_seller_id, p_title, p_price_minor, p_currency, p_image_url, p_url, p_status)
  RETURNING * INTO l;
  IF FOUND THEN
    status := 'updated';
  ELSE
    status := 'unchanged';
    SELECT * INTO l FROM listings ll WHERE ll.id = p_id;
  END IF;
  listing := lc_listing_json(l); RETURN NEXT;
END
$$;
--> statement-breakpoint
-- As lc_open_chat of 0008 (kept beside it, unchanged, for instances of the release before while they drain),
-- with the listing checked first, under its lock (lc_listing_key): a registered listing opens chats only with
-- its seller and not once removed; an unregistered one only while `p_listings_required` is false. With
-- `p_create` false nothing is created: the existing chat is answered after the same checks, or `absent` (the
-- path of a buyer past CHAT_OPEN_LIMIT_PER_HOUR). One status instead of 0008's flags:
--   created, existing (with the chat), absent, blocked, listing_not_found, listing_closed.
CREATE FUNCTION lc_open_chat(p_listing_id bigint, p_buyer_id bigint, p_seller_id bigint, p_listings_required boolean,
  p_create boolean)
RETURNS TABLE (status text, chat jsonb, user_id bigint, event_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  c chats;
  l listings;
  v_json jsonb;
BEGIN
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
    status := 'existing'; chat := lc_chat_json(c); RETURN NEXT; RETURN;
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
    status := 'existing'; chat := lc_chat_json(c); RETURN NEXT; RETURN;
  END IF;
  INSERT INTO chat_participants (chat_id, user_id, role, last_activity_at)
  VALUES (c.id, p_buyer_id, 'buyer', c.last_activity_at), (c.id, p_seller_id, 'seller', c.last_activity_at);
  v_json := lc_chat_json(c);
  RETURN QUERY
  SELECT 'created'::text, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[c.id], ARRAY['chat_created'], ARRAY[NULL::bigint],
    ARRAY[jsonb_build_object('chat', v_json)]) AS a;
END
$$;
--> statement-breakpoint
-- As in 0008 (same signature and columns, replaced in place), with one more status: `listing_closed` for a
-- send in a chat whose listing is registered as removed (a retry of a send stored before still gets
-- `repeat`); the others of the batch are stored. One key lookup of `listings` per chat of the batch. The
-- lookup takes no lock: a send that read the listing before its removal committed may still be stored.
CREATE OR REPLACE FUNCTION lc_send_messages(p_sends jsonb)
RETURNS TABLE (ord bigint, status text, message jsonb, user_id bigint, event_id bigint, became_mutual boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  x record;
  m messages;
  c chats;
  v_chat_id bigint;
  v_recipient bigint;
  v_buyer bigint;
  v_buyer_wrote boolean;
  v_seller_wrote boolean;
  v_senders bigint[];
  v_i integer;
  created_ords bigint[] := '{}';
  created_chats bigint[] := '{}';
  created_ids bigint[] := '{}';
  created_json jsonb[] := '{}';
  created_recipients bigint[] := '{}';
  created_senders bigint[] := '{}';
  -- Chats where, as this batch first read them, not both participants had written yet (rare: a chat's first
  -- messages). Only these are looked at again under the chat's row lock; "both wrote" never goes back.
  unsettled bigint[] := '{}';
  mutual_ords bigint[] := '{}';
  r record;
  -- The batch's chats whose listing was looked up: on a removed listing, or not (one key lookup per chat).
  closed_chats bigint[] := '{}';
  open_chats bigint[] := '{}';
  v_closed boolean;
BEGIN
  FOR x IN
    SELECT e.ord, (e.v->>0)::bigint AS sender_id, (e.v->>1)::bigint AS chat_id, e.v->>2 AS content,
      e.v->>3 AS client_msg_id,
      CASE WHEN jsonb_typeof(e.v->4) = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(e.v->4))
        ELSE '{}'::text[] END AS flags
    FROM jsonb_array_elements(p_sends) WITH ORDINALITY AS e(v, ord)
  LOOP
    ord := x.ord; message := NULL; user_id := NULL; event_id := NULL; became_mutual := NULL;
    SELECT * INTO c FROM chats cc WHERE cc.id = x.chat_id AND x.sender_id IN (cc.buyer_id, cc.seller_id);
    IF NOT FOUND THEN
      status := 'not_found'; RETURN NEXT; CONTINUE;
    END IF;
    IF x.chat_id = ANY(open_chats) THEN
      v_closed := false;
    ELSIF x.chat_id = ANY(closed_chats) THEN
      v_closed := true;
    ELSE
      v_closed := EXISTS (SELECT FROM listings l WHERE l.id = c.listing_id AND l.status = 'removed');
      IF v_closed THEN closed_chats := closed_chats || x.chat_id; ELSE open_chats := open_chats || x.chat_id; END IF;
    END IF;
    IF v_closed THEN
      -- As for a block: a retry of a send stored before the removal still gets its message.
      SELECT * INTO m FROM messages mm
      WHERE mm.sender_id = x.sender_id AND mm.client_msg_id = x.client_msg_id AND mm.chat_id = x.chat_id;
      IF FOUND THEN
        status := 'repeat'; message := lc_message_json(m);
      ELSE
        status := 'listing_closed';
      END IF;
      RETURN NEXT; CONTINUE;
    END IF;
    v_recipient := CASE WHEN c.buyer_id = x.sender_id THEN c.seller_id ELSE c.buyer_id END;
    PERFORM pg_advisory_xact_lock_shared(1010, lc_pair_key(x.sender_id, v_recipient));
    IF lc_blocked(x.sender_id, v_recipient) THEN
      SELECT * INTO m FROM messages mm
      WHERE mm.sender_id = x.sender_id AND mm.client_msg_id = x.client_msg_id AND mm.chat_id = x.chat_id;
      IF FOUND THEN
        status := 'repeat'; message := lc_message_json(m);
      ELSE
        status := 'blocked';
      END IF;
      RETURN NEXT; CONTINUE;
    END IF;
    INSERT INTO messages AS mm (chat_id, sender_id, content, client_msg_id, flags)
    VALUES (x.chat_id, x.sender_id, x.content, x.client_msg_id, x.flags)
    ON CONFLICT DO NOTHING
    RETURNING mm.* INTO m;
    IF FOUND THEN
      created_ords := created_ords || x.ord;
      created_chats := created_chats || x.chat_id;
      created_ids := created_ids || m.id;
      created_json := created_json || lc_message_json(m);
      created_recipients := created_recipients || v_recipient;
      created_senders := created_senders || x.sender_id;
      -- Only the first message of someone who had not written can make a chat mutual ("wrote" never goes
      -- back): a send by one who had (a buyer writing on to a seller who never answers) needs no second look.
      IF NOT (CASE WHEN x.sender_id = c.buyer_id THEN c.buyer_wrote ELSE c.seller_wrote END)
        AND NOT x.chat_id = ANY(unsettled) THEN
        unsettled := unsettled || x.chat_id;
      END IF;
      CONTINUE;
    END IF;
    -- Stored before (maybe by a concurrent send that just committed: this statement sees it).
    SELECT * INTO m FROM messages mm WHERE mm.sender_id = x.sender_id AND mm.client_msg_id = x.client_msg_id;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'client_msg_id % of user % neither inserted nor found', x.client_msg_id, x.sender_id;
    END IF;
    IF m.chat_id = x.chat_id THEN
      status := 'repeat'; message := lc_message_json(m);
    ELSE
      status := 'conflict';
    END IF;
    RETURN NEXT;
  END LOOP;
  IF cardinality(created_ords) = 0 THEN
    RETURN;
  END IF;
  -- Per chat (ascending): activity, the newest message, who has written, and each participant's unread
  -- count (others' messages). greatest(): concurrent batches commit in any order, and none of it moves back.
  FOR v_chat_id IN SELECT DISTINCT u.id FROM unnest(created_chats) AS u(id) ORDER BY u.id LOOP
    v_senders := '{}';
    IF v_chat_id = ANY(unsettled) THEN
      -- Who had written, as committed: the row lock (the chat's, first, as everywhere) orders this batch
      -- after any other that wrote here, so of two first messages sent at once exactly one makes it mutual.
      -- NO KEY, as the update below takes it: a plain FOR UPDATE would wait for the key-share locks that
      -- the other batch's inserted messages hold on the chat (their foreign key), and that batch for ours.
      SELECT cc.buyer_id, cc.buyer_wrote, cc.seller_wrote INTO v_buyer, v_buyer_wrote, v_seller_wrote
      FROM chats cc WHERE cc.id = v_chat_id FOR NO KEY UPDATE;
      v_senders := ARRAY(SELECT created_senders[i] FROM generate_subscripts(created_ids, 1) AS i
                         WHERE created_chats[i] = v_chat_id ORDER BY i);
      IF NOT (v_buyer_wrote AND v_seller_wrote) THEN
        FOR v_i IN SELECT i FROM generate_subscripts(created_ids, 1) AS i WHERE created_chats[i] = v_chat_id ORDER BY i
        LOOP
          IF created_senders[v_i] = v_buyer THEN v_buyer_wrote := true; ELSE v_seller_wrote := true; END IF;
          IF v_buyer_wrote AND v_seller_wrote THEN
            mutual_ords := mutual_ords || created_ords[v_i];
            EXIT;
          END IF;
        END LOOP;
      END IF;
    END IF;
    UPDATE chats c SET last_activity_at = greatest(c.last_activity_at, now()),
      last_message_id = greatest(c.last_message_id,
        (SELECT max(created_ids[i]) FROM generate_subscripts(created_ids, 1) AS i WHERE created_chats[i] = v_chat_id)),
      -- In the update the send makes anyway: no row version of its own.
      buyer_wrote = c.buyer_wrote OR c.buyer_id = ANY(v_senders),
      seller_wrote = c.seller_wrote OR c.seller_id = ANY(v_senders)
    WHERE c.id = v_chat_id;
    UPDATE chat_participants p SET last_activity_at = greatest(p.last_activity_at, now()),
      unread_count = p.unread_count +
        (SELECT count(*) FROM generate_subscripts(created_ids, 1) AS i
         WHERE created_chats[i] = v_chat_id AND created_recipients[i] = p.user_id)
    WHERE p.chat_id = v_chat_id;
  END LOOP;
  RETURN QUERY
  SELECT created_ords[a.ord], 'created'::text, created_json[a.ord], a.user_id, a.event_id,
    created_ords[a.ord] = ANY(mutual_ords)
  FROM lc_append_events(
    created_chats,
    array_fill('new_message'::text, ARRAY[cardinality(created_ords)]),
    created_ids,
    ARRAY(SELECT jsonb_build_object('chat_id', created_chats[i], 'message', created_json[i])
          FROM generate_subscripts(created_ords, 1) AS i ORDER BY i)
  ) AS a;
  -- The recipients' badge totals, on the stream rows the append has just locked (ascending user id), one
  -- key lookup each (a join with a table here is planned for a batch of unknown size and scans it whole).
  FOR r IN SELECT u.user_id, count(*) AS n FROM unnest(created_recipients) AS u(user_id) GROUP BY 1 ORDER BY 1
  LOOP
    UPDATE user_streams s SET unread_total = s.unread_total + r.n WHERE s.user_id = r.user_id;
  END LOOP;
END
$$;
