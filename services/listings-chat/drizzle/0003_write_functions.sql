-- Every write is one call of one of these functions: one round trip, one implicit transaction, and no lock
-- is ever held while PostgreSQL waits for Node. PL/pgSQL plans each statement inside once per session and
-- reuses the plan, as a prepared statement would be.
--
-- Row locks are always taken in one order, so writers never deadlock: chats (ascending id), then their
-- participants, then messages, then chat_events, then user_streams (ascending user id) last. (A send
-- inserts its messages first; a new row locks no existing one.)
--
-- Shapes returned as jsonb are exactly what the API shows (db/rows.ts toMessage / toChat): timestamps in
-- UTC with milliseconds and "Z", as Date.prototype.toISOString prints them.
CREATE FUNCTION lc_iso(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;
--> statement-breakpoint
CREATE FUNCTION lc_message_json(m messages) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', m.id, 'chat_id', m.chat_id, 'sender_id', m.sender_id,
    -- A deleted message keeps its id and loses its content.
    'content', CASE WHEN m.deleted_at IS NULL THEN m.content ELSE '' END,
    'client_msg_id', m.client_msg_id, 'created_at', lc_iso(m.created_at),
    'edited_at', lc_iso(m.edited_at), 'deleted_at', lc_iso(m.deleted_at))
$$;
--> statement-breakpoint
CREATE FUNCTION lc_chat_json(c chats) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', c.id, 'listing_id', c.listing_id, 'buyer_id', c.buyer_id, 'seller_id', c.seller_id,
    'created_at', lc_iso(c.created_at), 'last_activity_at', lc_iso(c.last_activity_at))
$$;
--> statement-breakpoint
-- Appends events (the i-th of each array is one event) to the streams of their chat's two participants,
-- in the caller's transaction: each change is stored once in chat_events, each participant's stream end
-- is bumped once for all of that user's events here (rows taken in ascending user id), and each user gets
-- their events' ids in the order of the arrays. The row locks on user_streams are held until commit, so one
-- user's ids are handed out in commit order and a rollback gives them back: each stream stays dense.
-- Returns, for each event (ord = its index in the arrays) and each participant, that user's event_id.
CREATE FUNCTION lc_append_events(p_chat_ids bigint[], p_types text[], p_message_ids bigint[], p_payloads jsonb[])
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
    SELECT ev.id, ev.chat_id, ev.type, ev.message_id, ev.payload FROM ev
  ), addressed AS MATERIALIZED (
    SELECT ev.ord, ev.id, u.user_id FROM ev CROSS JOIN LATERAL (VALUES (ev.buyer_id), (ev.seller_id)) AS u(user_id)
  ), bumped AS (
    INSERT INTO user_streams AS s (user_id, last_event_id)
    SELECT a.user_id, count(*) FROM addressed a GROUP BY a.user_id ORDER BY a.user_id
    ON CONFLICT (user_id) DO UPDATE SET last_event_id = s.last_event_id + excluded.last_event_id
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
-- Stores a batch of sends (a jsonb array of [sender_id, chat_id, content, client_msg_id]) in one
-- transaction. A bad send does not fail the others; each gets its own status:
--   created    one row per participant, with the message and that user's event_id;
--   repeat     this sender already stored this client_msg_id in this chat: the stored message, nothing new;
--   conflict   this sender used this client_msg_id in another chat;
--   not_found  no such chat, or the sender does not take part in it.
CREATE FUNCTION lc_send_messages(p_sends jsonb)
RETURNS TABLE (ord bigint, status text, message jsonb, user_id bigint, event_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  x record;
  m messages;
  v_chat_id bigint;
  created_ords bigint[] := '{}';
  created_chats bigint[] := '{}';
  created_ids bigint[] := '{}';
  created_json jsonb[] := '{}';
BEGIN
  FOR x IN
    SELECT e.ord, (e.v->>0)::bigint AS sender_id, (e.v->>1)::bigint AS chat_id, e.v->>2 AS content,
      e.v->>3 AS client_msg_id
    FROM jsonb_array_elements(p_sends) WITH ORDINALITY AS e(v, ord)
  LOOP
    ord := x.ord; message := NULL; user_id := NULL; event_id := NULL;
    PERFORM FROM chats c WHERE c.id = x.chat_id AND x.sender_id IN (c.buyer_id, c.seller_id);
    IF NOT FOUND THEN
      status := 'not_found'; RETURN NEXT; CONTINUE;
    END IF;
    INSERT INTO messages AS mm (chat_id, sender_id, content, client_msg_id)
    VALUES (x.chat_id, x.sender_id, x.content, x.client_msg_id)
    ON CONFLICT DO NOTHING
    RETURNING mm.* INTO m;
    IF FOUND THEN
      created_ords := created_ords || x.ord;
      created_chats := created_chats || x.chat_id;
      created_ids := created_ids || m.id;
      created_json := created_json || lc_message_json(m);
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
  -- greatest(): concurrent batches commit in any order, and activity never moves back.
  FOR v_chat_id IN SELECT DISTINCT u.id FROM unnest(created_chats) AS u(id) ORDER BY u.id LOOP
    UPDATE chats c SET last_activity_at = greatest(c.last_activity_at, now()) WHERE c.id = v_chat_id;
    UPDATE chat_participants p SET last_activity_at = greatest(p.last_activity_at, now()) WHERE p.chat_id = v_chat_id;
  END LOOP;
  RETURN QUERY
  SELECT created_ords[a.ord], 'created'::text, created_json[a.ord], a.user_id, a.event_id
  FROM lc_append_events(
    created_chats,
    array_fill('new_message'::text, ARRAY[cardinality(created_ords)]),
    created_ids,
    ARRAY(SELECT jsonb_build_object('chat_id', created_chats[i], 'message', created_json[i])
          FROM generate_subscripts(created_ords, 1) AS i ORDER BY i)
  ) AS a;
END
$$;
--> statement-breakpoint
-- Edits a message. Status: edited (one row per participant, with event ids), not_found (no such message,
-- or the user does not take part in its chat), forbidden (not the sender), already_deleted.
CREATE FUNCTION lc_edit_message(p_user_id bigint, p_message_id bigint, p_content text)
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  v_json jsonb;
BEGIN
  SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
  IF NOT FOUND OR NOT EXISTS (SELECT FROM chats c WHERE c.id = m.chat_id AND p_user_id IN (c.buyer_id, c.seller_id)) THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  IF m.sender_id <> p_user_id THEN
    status := 'forbidden'; RETURN NEXT; RETURN;
  END IF;
  -- Re-checked under the row lock: a delete may have committed since the look above.
  UPDATE messages mm SET content = p_content, edited_at = now()
  WHERE mm.id = p_message_id AND mm.deleted_at IS NULL
  RETURNING mm.* INTO m;
  IF NOT FOUND THEN
    status := 'already_deleted'; RETURN NEXT; RETURN;
  END IF;
  v_json := lc_message_json(m);
  RETURN QUERY
  SELECT 'edited'::text, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[m.chat_id], ARRAY['message_edited'], ARRAY[m.id],
    ARRAY[jsonb_build_object('chat_id', m.chat_id, 'message', v_json)]) AS a;
END
$$;
--> statement-breakpoint
-- Deletes a message and blanks its content in the events that carried it, so replay does not resurrect it.
-- Status: deleted (one row per participant, with event ids), unchanged (already deleted: the message as it
-- is), not_found, forbidden (as for edits).
CREATE FUNCTION lc_delete_message(p_user_id bigint, p_message_id bigint)
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  v_json jsonb;
BEGIN
  SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
  IF NOT FOUND OR NOT EXISTS (SELECT FROM chats c WHERE c.id = m.chat_id AND p_user_id IN (c.buyer_id, c.seller_id)) THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  IF m.sender_id <> p_user_id THEN
    status := 'forbidden'; RETURN NEXT; RETURN;
  END IF;
  UPDATE messages mm SET deleted_at = now()
  WHERE mm.id = p_message_id AND mm.deleted_at IS NULL
  RETURNING mm.* INTO m;
  IF NOT FOUND THEN
    -- Deleted before, or by a concurrent request that told everyone: the message as it is now.
    SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
    status := 'unchanged'; message := lc_message_json(m); RETURN NEXT; RETURN;
  END IF;
  UPDATE chat_events e SET payload = jsonb_set(e.payload, '{message,content}', '""'::jsonb)
  WHERE e.message_id = m.id AND e.type IN ('new_message', 'message_edited');
  v_json := lc_message_json(m);
  RETURN QUERY
  SELECT 'deleted'::text, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[m.chat_id], ARRAY['message_deleted'], ARRAY[m.id],
    ARRAY[jsonb_build_object('chat_id', m.chat_id, 'message', v_json)]) AS a;
END
$$;
--> statement-breakpoint
-- Moves the user's read marker in a chat forward to a message (never back) and counts what is left unread.
-- Status: read (the marker moved: one row per participant, with event ids), unchanged (it was there or
-- further), chat_not_found (no such chat or not a participant), message_not_found (not in this chat).
CREATE FUNCTION lc_mark_read(p_user_id bigint, p_chat_id bigint, p_message_id bigint)
RETURNS TABLE (status text, unread_count bigint, read_at text, user_id bigint, event_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_marker bigint;
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
  UPDATE chat_participants p SET last_read_message_id = p_message_id
  WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id AND coalesce(p.last_read_message_id, 0) < p_message_id;
  IF FOUND THEN
    status := 'read';
  ELSE
    status := 'unchanged';
  END IF;
  SELECT coalesce(p.last_read_message_id, 0) INTO v_marker
  FROM chat_participants p WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
  SELECT count(*) INTO v_unread FROM messages mm
  WHERE mm.chat_id = p_chat_id AND mm.id > v_marker AND mm.sender_id <> p_user_id AND mm.deleted_at IS NULL;
  IF status = 'unchanged' THEN
    unread_count := v_unread; RETURN NEXT; RETURN;
  END IF;
  RETURN QUERY
  SELECT 'read'::text, v_unread, lc_iso(now()), a.user_id, a.event_id
  FROM lc_append_events(ARRAY[p_chat_id], ARRAY['message_read'], ARRAY[p_message_id],
    ARRAY[jsonb_build_object('chat_id', p_chat_id, 'message_id', p_message_id, 'read_by', p_user_id,
      'read_at', lc_iso(now()))]) AS a;
END
$$;
--> statement-breakpoint
-- The chat of (listing, buyer, seller), created with its two participants on first contact.
-- created is false when it existed (or a concurrent call created it first); when true there is one row per
-- participant, with the event ids of its chat_created event.
CREATE FUNCTION lc_open_chat(p_listing_id bigint, p_buyer_id bigint, p_seller_id bigint)
RETURNS TABLE (created boolean, chat jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  c chats;
  v_json jsonb;
BEGIN
  SELECT * INTO c FROM chats cc
  WHERE cc.listing_id = p_listing_id AND cc.buyer_id = p_buyer_id AND cc.seller_id = p_seller_id;
  IF FOUND THEN
    created := false; chat := lc_chat_json(c); RETURN NEXT; RETURN;
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
    created := false; chat := lc_chat_json(c); RETURN NEXT; RETURN;
  END IF;
  INSERT INTO chat_participants (chat_id, user_id, role, last_activity_at)
  VALUES (c.id, p_buyer_id, 'buyer', c.last_activity_at), (c.id, p_seller_id, 'seller', c.last_activity_at);
  v_json := lc_chat_json(c);
  RETURN QUERY
  SELECT true, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[c.id], ARRAY['chat_created'], ARRAY[NULL::bigint],
    ARRAY[jsonb_build_object('chat', v_json)]) AS a;
END
$$;
