-- Exact unread counts, and one user_streams row version per write (issue 23). Online: functions only, no table
-- is rewritten or backfilled. lc_send_messages, lc_mark_read and lc_delete_message keep their signatures and
-- are replaced in place (instances of the release before call them as before); lc_append_events gains an
-- overload beside the one they use.
--
-- A participant's unread_count is the number of others' messages above their read marker that are not
-- deleted, and a user's unread_total the sum of their counts. Before this, a send added its messages to the
-- recipient's count whatever their marker: a message id is taken at the INSERT, before the chat's row lock,
-- so a batch with a higher id could commit first, the reader mark up to it, and then the lower id's batch add
-- one to a count with nothing unread (and marking read again answered "unchanged": the badge stuck).
--
-- The events of one statement for the chats' participants, as lc_append_events of 0006, and each user's unread
-- total moved by `p_unread_deltas` (per user of `p_unread_user_ids`, summed when one is named twice) in the same
-- upsert of their stream row: one row version per write, where the total was a second UPDATE after it. Only
-- participants of the events' chats may be named (others are not addressed, and their deltas would be
-- dropped). A user with no stream row has no unread counts (lc_open_chat's chat_created gave both of a chat's
-- participants theirs), so a negative delta only ever meets an existing row; the total is kept from going
-- below zero, as before.
CREATE FUNCTION lc_append_events(p_chat_ids bigint[], p_types text[], p_message_ids bigint[], p_payloads jsonb[],
  p_unread_user_ids bigint[], p_unread_deltas bigint[])
RETURNS TABLE (ord bigint, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  RETURN QUERY
  WITH ev AS MATERIALIZED (
    SELECT e.ord, nextval('chat_events_id_seq') AS id, e.chat_id, e.type, e.message_id, e.payload,
      c.buyer_id, c.seller_id
    FROM unnest(p_chat_ids, p_types, p_message_ids, p_payloads) WITH ORDINALITY
      AS e(chat_id, type, message_id, payload, ord)
    JOIN chats c ON c.id = e.chat_id
  ), stored AS (
    INSERT INTO chat_events (id, chat_id, type, message_id, payload)
    SELECT ev.id, ev.chat_id, ev.type, ev.message_id,
      CASE WHEN ev.message_id IS NOT NULL THEN ev.payload - 'message' ELSE ev.payload END
    FROM ev
  ), addressed AS MATERIALIZED (
    SELECT ev.ord, ev.id, u.user_id FROM ev CROSS JOIN LATERAL (VALUES (ev.buyer_id), (ev.seller_id)) AS u(user_id)
  ), unread AS (
    SELECT d.user_id, sum(d.delta)::bigint AS delta
    FROM unnest(p_unread_user_ids, p_unread_deltas) AS d(user_id, delta) GROUP BY d.user_id
  ), bumped AS (
    -- Ascending user id, as every writer of stream rows locks them.
    INSERT INTO user_streams AS s (user_id, last_event_id, unread_total)
    SELECT a.user_id, count(*), coalesce(max(d.delta), 0)
    FROM addressed a LEFT JOIN unread d ON d.user_id = a.user_id
    GROUP BY a.user_id ORDER BY a.user_id
    ON CONFLICT (user_id) DO UPDATE SET last_event_id = s.last_event_id + excluded.last_event_id,
      unread_total = greatest(s.unread_total + excluded.unread_total, 0)
    RETURNING s.user_id, s.last_event_id
  ), numbered AS MATERIALIZED (
    SELECT a.ord, a.id, a.user_id,
      b.last_event_id - count(*) OVER w + row_number() OVER (w ORDER BY a.ord) AS event_id
    FROM addressed a JOIN bumped b ON b.user_id = a.user_id
    WINDOW w AS (PARTITION BY a.user_id)
  ), linked AS (
    INSERT INTO user_events (user_id, event_id, chat_event_id) SELECT n.user_id, n.event_id, n.id FROM numbered n
  )
  SELECT n.ord, n.user_id, n.event_id FROM numbered n;
END
$$;
--> statement-breakpoint
-- The four-argument form (edits, opens, and the release before's callers): no unread change, one body.
CREATE OR REPLACE FUNCTION lc_append_events(p_chat_ids bigint[], p_types text[], p_message_ids bigint[], p_payloads jsonb[])
RETURNS TABLE (ord bigint, user_id bigint, event_id bigint) LANGUAGE sql AS $$
  SELECT a.ord, a.user_id, a.event_id
  FROM lc_append_events(p_chat_ids, p_types, p_message_ids, p_payloads, '{}'::bigint[], '{}'::bigint[]) AS a
$$;
--> statement-breakpoint
-- As in 0009 (same signature and columns, replaced in place), with the recipients' unread counts exact: only a
-- message above the recipient's read marker, as their locked row has it, is counted, and the total moves by
-- what the counts did, in the append's upsert of the stream row (no second UPDATE of it).
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
  -- What this batch added to each recipient's unread count, for their stream row's total.
  unread_users bigint[] := '{}';
  unread_deltas bigint[] := '{}';
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
    -- Unread: the recipient's new messages above their read marker, as the row lock gives it (the newest
    -- version: a concurrent mark_read that committed is seen). Ids are taken at the INSERT above, before any
    -- lock, so a higher id of another batch may have committed and been read already: a message at or below
    -- the marker is read. RETURNING evaluates the same count on the row it wrote (the marker is not changed
    -- here), so the total moves by exactly what the count did.
    FOR r IN
      UPDATE chat_participants p SET last_activity_at = greatest(p.last_activity_at, now()),
        unread_count = p.unread_count +
          (SELECT count(*) FROM generate_subscripts(created_ids, 1) AS i
           WHERE created_chats[i] = v_chat_id AND created_recipients[i] = p.user_id
             AND created_ids[i] > coalesce(p.last_read_message_id, 0))
      WHERE p.chat_id = v_chat_id
      RETURNING p.user_id,
        (SELECT count(*) FROM generate_subscripts(created_ids, 1) AS i
         WHERE created_chats[i] = v_chat_id AND created_recipients[i] = p.user_id
           AND created_ids[i] > coalesce(p.last_read_message_id, 0)) AS added
    LOOP
      IF r.added > 0 THEN
        unread_users := unread_users || r.user_id;
        unread_deltas := unread_deltas || r.added;
      END IF;
    END LOOP;
  END LOOP;
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
-- As in 0004 (same signature and columns, replaced in place), with the counting bounded and one row version
-- each of the participant and of the stream row. Under the participant's row lock (sends and deletes in this
-- chat wait for it), its kept count is exact: the others' live messages above the old marker. The new count:
-- - a recount of the messages after the new marker when there are fewer than 1000 of them (reading up to the
--   newest: none), which also mends a count kept wrong by the release before;
-- - otherwise (an old message marked read in a long chat) the kept count less the others' live messages the
--   marker passes (between the old marker and the new one), instead of counting the rest of the chat: 65 ms
--   for 100k messages before. What is left to count is then the messages between the two markers: it is only
--   large when a marker moves into the middle of a long unread stretch.
-- A message whose id is below the new marker but whose send has not committed is in neither count, and its send
-- will not count it (lc_send_messages counts only ids above the marker).
CREATE OR REPLACE FUNCTION lc_mark_read(p_user_id bigint, p_chat_id bigint, p_message_id bigint)
RETURNS TABLE (status text, unread_count bigint, read_at text, user_id bigint, event_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_old_mark bigint;
  v_before bigint;
  v_after_seen integer;
  v_after_unread bigint;
  v_passed bigint;
  v_unread bigint;
BEGIN
  PERFORM FROM chats c WHERE c.id = p_chat_id AND p_user_id IN (c.buyer_id, c.seller_id);
  IF NOT FOUND THEN
    status := 'chat_not_found'; RETURN NEXT; RETURN;
  END IF;
  PERFORM FROM messages mm WHERE mm.id = p_message_id AND mm.chat_id = p_chat_id;
  IF NOT FOUND THEN
    status := 'message_not_found'; RETURN NEXT; RETURN;
  END IF;
  -- Already there or further (a marker never moves back, so no lock is needed to see it): the kept count
  -- answers, nothing is counted or written.
  SELECT p.last_read_message_id, p.unread_count INTO v_old_mark, v_before
  FROM chat_participants p WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
  IF coalesce(v_old_mark, 0) >= p_message_id THEN
    status := 'unchanged'; unread_count := v_before; RETURN NEXT; RETURN;
  END IF;
  -- Again under the row lock (NO KEY, as the sends' and deletes' updates take it): the newest marker and count.
  SELECT p.last_read_message_id, p.unread_count INTO v_old_mark, v_before
  FROM chat_participants p WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id FOR NO KEY UPDATE;
  IF coalesce(v_old_mark, 0) >= p_message_id THEN
    status := 'unchanged'; unread_count := v_before; RETURN NEXT; RETURN;
  END IF;
  SELECT count(*), count(*) FILTER (WHERE t.sender_id <> p_user_id AND t.deleted_at IS NULL)
  INTO v_after_seen, v_after_unread
  FROM (SELECT mm.sender_id, mm.deleted_at FROM messages mm
        WHERE mm.chat_id = p_chat_id AND mm.id > p_message_id ORDER BY mm.id LIMIT 1000) t;
  IF v_after_seen < 1000 THEN
    v_unread := v_after_unread;
  ELSE
    SELECT count(*) INTO v_passed FROM messages mm
    WHERE mm.chat_id = p_chat_id AND mm.id > coalesce(v_old_mark, 0) AND mm.id <= p_message_id
      AND mm.sender_id <> p_user_id AND mm.deleted_at IS NULL;
    v_unread := greatest(v_before - v_passed, 0);
  END IF;
  UPDATE chat_participants p SET last_read_message_id = p_message_id, unread_count = v_unread
  WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
  RETURN QUERY
  SELECT 'read'::text, v_unread, lc_iso(now()), a.user_id, a.event_id
  FROM lc_append_events(ARRAY[p_chat_id], ARRAY['message_read'], ARRAY[p_message_id],
    ARRAY[jsonb_build_object('chat_id', p_chat_id, 'message_id', p_message_id, 'read_by', p_user_id,
      'read_at', lc_iso(now()))],
    ARRAY[p_user_id], ARRAY[v_unread - v_before]) AS a;
END
$$;
--> statement-breakpoint
-- As in 0006 (same signature and columns, replaced in place), with the recipient's total moved in the
-- append's upsert of their stream row (one row version, where it was a second UPDATE), by what their count did.
CREATE OR REPLACE FUNCTION lc_delete_message(p_user_id bigint, p_message_id bigint)
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  v_json jsonb;
  v_recipient chat_participants;
  v_delta bigint := 0;
BEGIN
  SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
  IF NOT FOUND OR NOT EXISTS (SELECT FROM chats c WHERE c.id = m.chat_id AND p_user_id IN (c.buyer_id, c.seller_id)) THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  IF m.sender_id <> p_user_id THEN
    status := 'forbidden'; RETURN NEXT; RETURN;
  END IF;
  -- The recipient's row first (participants before messages, as everywhere): its read marker and count cannot
  -- move while this decides whether the message was unread for them.
  SELECT * INTO v_recipient FROM chat_participants p
  WHERE p.chat_id = m.chat_id AND p.user_id <> p_user_id FOR UPDATE;
  UPDATE messages mm SET deleted_at = now()
  WHERE mm.id = p_message_id AND mm.deleted_at IS NULL
  RETURNING mm.* INTO m;
  IF NOT FOUND THEN
    -- Deleted before, or by a concurrent request that told everyone: the message as it is now.
    SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
    status := 'unchanged'; message := lc_message_json(m); RETURN NEXT; RETURN;
  END IF;
  -- A message the recipient had not read leaves their unread count.
  IF m.id > coalesce(v_recipient.last_read_message_id, 0) AND v_recipient.unread_count > 0 THEN
    UPDATE chat_participants p SET unread_count = p.unread_count - 1
    WHERE p.chat_id = v_recipient.chat_id AND p.user_id = v_recipient.user_id;
    v_delta := -1;
  END IF;
  v_json := lc_message_json(m);
  RETURN QUERY
  SELECT 'deleted'::text, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[m.chat_id], ARRAY['message_deleted'], ARRAY[m.id],
    ARRAY[jsonb_build_object('chat_id', m.chat_id, 'message', v_json)],
    ARRAY[v_recipient.user_id], ARRAY[v_delta]) AS a;
END
$$;
