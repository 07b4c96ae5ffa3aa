-- migrate: after lc_webhooks_on, lc_append_events, lc_blocked, lc_message_json, lc_pair_key, lc_suspended
-- Stores a batch of sends in one transaction. A bad send does not fail the others; each gets its own status:
--   created    one row per participant, with the message and that user's event_id;
--   repeat     this sender already stored this client_msg_id in this chat: the stored message, nothing new;
--   conflict   this sender used this client_msg_id in another chat;
--   not_found  no such chat, or the sender does not take part in it. (0003)
--
-- Each send is [sender_id, chat_id, content, client_msg_id, flags] (flags a JSON array of the content rules'
-- ids, stored with the message; absent or null: none). A send between two users either of whom blocks the
-- other gets the status `blocked` (a retry of a send stored before the block still gets `repeat`), and the
-- others of the batch are stored. And the chat keeps whether its buyer and its seller have written:
-- `became_mutual` is true on the rows of the one send that made both writers first. (0008)
--
-- One more status: `listing_closed` for a send in a chat whose listing is registered as removed (a retry of
-- a send stored before still gets `repeat`); the others of the batch are stored. One key lookup of `listings`
-- per chat of the batch. The lookup takes no lock: a send that read the listing before its removal committed
-- may still be stored. (0009)
--
-- The recipients' unread counts exact: only a message above the recipient's read marker, as their locked row
-- has it, is counted, and the total moves by what the counts did, in the append's upsert of the stream row
-- (no second UPDATE of it). (0010)
--
-- Reads the batch's arrays once per chat: 0010 scanned the whole batch for each chat's newest id and twice for
-- each participant's unread count (in SET and in RETURNING), which grows with the square of a group-commit
-- batch. (0011)
--
-- The two-argument form (0023): with `p_check_suspension`, one more status, `suspended`, while the platform
-- suspends the sender (lc_suspended: a key probe per send); and, either way, a recipient's archived chat comes
-- back, in the update of their row the send makes anyway. The one-argument form (the release before's callers,
-- which know no `suspended`) is this without the check.
--
-- Webhooks (0027, CONTRACT §9): while lc_webhooks_on(), a `message.created` delivery per stored message (its
-- chat's ids and flags, as lc_webhook_message_data), in one insert per batch; and a recipient with no reminder
-- pending or sent gets `unread_since`, in the update of their row the send makes anyway (lc_notify_unread).
--
-- Photos (0029, CONTRACT §11): a send may carry a sixth element, its attachments as the API shows them (each
-- with the `id` of an upload that media/uploads.ts has checked and processed). The message is then `kind`
-- image, and its uploads are claimed in the same statement: each must be the sender's, processed, not
-- attached and less than 24 hours old (after that the sweeper may be removing it), and is locked before the
-- insert (uploads rows come right after the send's own new message row, before any chat: a send only takes
-- unattached uploads, a delete only attached ones). Any missing: the status `attachment_invalid`, nothing
-- stored (a retry of a send stored before still gets `repeat`).
CREATE OR REPLACE FUNCTION lc_send_messages(p_sends jsonb, p_check_suspension boolean)
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
  v_refusal text;
  -- What this batch added to each recipient's unread count, for their stream row's total.
  unread_users bigint[] := '{}';
  unread_deltas bigint[] := '{}';
  -- The batch's messages in the chat at hand, and their recipients: read once per chat from the batch's
  -- arrays, so that each statement below works on the chat's few messages, not on the whole batch again.
  v_chat_msg_ids bigint[];
  v_chat_recipients bigint[];
  -- Whether to record webhooks, read once per batch; and their data, one per stored message.
  v_hooks boolean := lc_webhooks_on();
  created_hooks jsonb[] := '{}';
  -- The send's uploads (photos), and how many of them it could claim.
  v_upload_ids text[];
  v_claimable bigint;
BEGIN
  FOR x IN
    SELECT e.ord, (e.v->>0)::bigint AS sender_id, (e.v->>1)::bigint AS chat_id, e.v->>2 AS content,
      e.v->>3 AS client_msg_id,
      CASE WHEN jsonb_typeof(e.v->4) = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(e.v->4))
        ELSE '{}'::text[] END AS flags,
      CASE WHEN jsonb_typeof(e.v->5) = 'array' AND jsonb_array_length(e.v->5) > 0 THEN e.v->5 END AS attachments
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
    -- Refused: a removed listing, a suspended sender, a block. A retry of a send stored before the refusal
    -- began still gets its message.
    v_refusal := CASE WHEN v_closed THEN 'listing_closed' WHEN p_check_suspension AND lc_suspended(x.sender_id) THEN 'suspended' END;
    v_recipient := CASE WHEN c.buyer_id = x.sender_id THEN c.seller_id ELSE c.buyer_id END;
    IF v_refusal IS NULL THEN
      PERFORM pg_advisory_xact_lock_shared(1010, lc_pair_key(x.sender_id, v_recipient));
      IF lc_blocked(x.sender_id, v_recipient) THEN v_refusal := 'blocked'; END IF;
    END IF;
    IF v_refusal IS NOT NULL THEN
      SELECT * INTO m FROM messages mm
      WHERE mm.sender_id = x.sender_id AND mm.client_msg_id = x.client_msg_id AND mm.chat_id = x.chat_id;
      IF FOUND THEN
        status := 'repeat'; message := lc_message_json(m);
      ELSE
        status := v_refusal;
      END IF;
      RETURN NEXT; CONTINUE;
    END IF;
    v_upload_ids := NULL;
    IF x.attachments IS NOT NULL THEN
      v_upload_ids := ARRAY(SELECT a->>'id' FROM jsonb_array_elements(x.attachments) AS a);
      SELECT count(*) INTO v_claimable FROM (
        SELECT FROM uploads u
        WHERE u.id = ANY(v_upload_ids) AND u.user_id = x.sender_id AND u.message_id IS NULL
          AND u.processed_at IS NOT NULL AND u.created_at > now() - interval '24 hours'
          -- Not one made due (an erasure) or claimed by a sweep, whose objects may be gone already: an unsent
          -- upload is due 25 h after its grant, more than an hour ahead while a send may take it.
          AND u.sweep_after > now() + interval '1 hour'
        FOR UPDATE) AS claimable;
      IF v_claimable <> cardinality(v_upload_ids) THEN
        SELECT * INTO m FROM messages mm WHERE mm.sender_id = x.sender_id AND mm.client_msg_id = x.client_msg_id;
        IF NOT FOUND THEN
          status := 'attachment_invalid';
        ELSIF m.chat_id = x.chat_id THEN
          status := 'repeat'; message := lc_message_json(m);
        ELSE
          status := 'conflict';
        END IF;
        RETURN NEXT; CONTINUE;
      END IF;
    END IF;
    INSERT INTO messages AS mm (chat_id, sender_id, content, client_msg_id, flags, kind, attachments)
    VALUES (x.chat_id, x.sender_id, x.content, x.client_msg_id, x.flags,
      CASE WHEN x.attachments IS NULL THEN 'text' ELSE 'image' END, x.attachments)
    ON CONFLICT DO NOTHING
    RETURNING mm.* INTO m;
    IF FOUND THEN
      IF v_upload_ids IS NOT NULL THEN
        UPDATE uploads u SET message_id = m.id, sweep_after = NULL WHERE u.id = ANY(v_upload_ids);
      END IF;
      created_ords := created_ords || x.ord;
      created_chats := created_chats || x.chat_id;
      created_ids := created_ids || m.id;
      created_json := created_json || lc_message_json(m);
      created_recipients := created_recipients || v_recipient;
      created_senders := created_senders || x.sender_id;
      IF v_hooks THEN
        created_hooks := created_hooks || jsonb_build_object('message', created_json[cardinality(created_json)],
          'chat', jsonb_build_object('id', c.id, 'listing_id', c.listing_id, 'buyer_id', c.buyer_id,
                                     'seller_id', c.seller_id),
          'flags', to_jsonb(x.flags));
      END IF;
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
    SELECT array_agg(created_ids[i] ORDER BY i), array_agg(created_recipients[i] ORDER BY i)
    INTO v_chat_msg_ids, v_chat_recipients
    FROM generate_subscripts(created_ids, 1) AS i WHERE created_chats[i] = v_chat_id;
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
      last_message_id = greatest(c.last_message_id, (SELECT max(t.id) FROM unnest(v_chat_msg_ids) AS t(id))),
      -- In the update the send makes anyway: no row version of its own.
      buyer_wrote = c.buyer_wrote OR c.buyer_id = ANY(v_senders),
      seller_wrote = c.seller_wrote OR c.seller_id = ANY(v_senders)
    WHERE c.id = v_chat_id;
    -- Unread: the recipient's new messages above their read marker, as the row lock gives it (the newest
    -- version: a concurrent mark_read that committed is seen). Ids are taken at the INSERT above, before any
    -- lock, so a higher id of another batch may have committed and been read already: a message at or below
    -- the marker is read. RETURNING evaluates the same count on the row it wrote (the marker is not changed
    -- here), so the total moves by exactly what the count did.
    FOR r IN
      UPDATE chat_participants p SET last_activity_at = greatest(p.last_activity_at, now()),
        unread_count = p.unread_count +
          (SELECT count(*) FROM unnest(v_chat_msg_ids, v_chat_recipients) AS t(id, recipient)
           WHERE t.recipient = p.user_id AND t.id > coalesce(p.last_read_message_id, 0)),
        -- A message from the other side brings an archived chat back (CONTRACT §8): its new_message says so.
        archived = p.archived AND NOT p.user_id = ANY(v_chat_recipients),
        -- The unread reminder's clock starts with the first message it would tell of (none while one was sent
        -- and not read since).
        unread_since = CASE WHEN v_hooks AND p.unread_since IS NULL AND NOT p.unread_notified
            AND EXISTS (SELECT FROM unnest(v_chat_msg_ids, v_chat_recipients) AS t(id, recipient)
                        WHERE t.recipient = p.user_id AND t.id > coalesce(p.last_read_message_id, 0))
          THEN now() ELSE p.unread_since END
      WHERE p.chat_id = v_chat_id
      RETURNING p.user_id,
        (SELECT count(*) FROM unnest(v_chat_msg_ids, v_chat_recipients) AS t(id, recipient)
         WHERE t.recipient = p.user_id AND t.id > coalesce(p.last_read_message_id, 0)) AS added
    LOOP
      IF r.added > 0 THEN
        unread_users := unread_users || r.user_id;
        unread_deltas := unread_deltas || r.added;
      END IF;
    END LOOP;
  END LOOP;
  IF v_hooks THEN
    INSERT INTO webhook_deliveries (type, data) SELECT 'message.created', h FROM unnest(created_hooks) AS h;
  END IF;
  RETURN QUERY
  SELECT created_ords[a.ord], 'created'::text, created_json[a.ord], a.user_id, a.event_id,
    created_ords[a.ord] = ANY(mutual_ords)
  FROM lc_append_events(
    created_chats,
    array_fill('new_message'::text, ARRAY[cardinality(created_ords)]),
    created_ids,
    ARRAY(SELECT jsonb_build_object('chat_id', created_chats[i], 'message', created_json[i])
          FROM generate_subscripts(created_ords, 1) AS i ORDER BY i),
    -- The recipients' badge totals, in the append's one write of their stream rows.
    unread_users,
    unread_deltas
  ) AS a;
END
$$;
--> statement-breakpoint
-- The one-argument form: as the release before 0023 called it, no suspension checked.
CREATE OR REPLACE FUNCTION lc_send_messages(p_sends jsonb)
RETURNS TABLE (ord bigint, status text, message jsonb, user_id bigint, event_id bigint, became_mutual boolean)
LANGUAGE sql AS $$
  SELECT * FROM lc_send_messages(p_sends, false)
$$;
