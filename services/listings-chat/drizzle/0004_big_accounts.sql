-- Big accounts: what a chat list, a badge and a read marker need is kept where it is read (the newest
-- message on the chat, unread counts on the participant and their total on the user's stream row), by the
-- same statements that change it; and the chat list's index has the list's exact order.
DROP INDEX "chat_participants_user_activity_idx";
--> statement-breakpoint
ALTER TABLE "chat_participants" ADD COLUMN "unread_count" integer DEFAULT 0 NOT NULL;
--> statement-breakpoint
ALTER TABLE "chats" ADD COLUMN "last_message_id" bigint;
--> statement-breakpoint
ALTER TABLE "user_streams" ADD COLUMN "unread_total" bigint DEFAULT 0 NOT NULL;
--> statement-breakpoint
-- The newest message of each chat, each participant's unread count and each user's total, as the
-- statements below will keep them from now on.
UPDATE "chats" c SET "last_message_id" = m.max_id
FROM (SELECT "chat_id", max("id") AS max_id FROM "messages" GROUP BY "chat_id") m
WHERE m."chat_id" = c."id";
--> statement-breakpoint
UPDATE "chat_participants" p SET "unread_count" = u.n
FROM (
  SELECT p2."chat_id", p2."user_id", count(*) AS n
  FROM "chat_participants" p2
  JOIN "messages" m ON m."chat_id" = p2."chat_id" AND m."id" > coalesce(p2."last_read_message_id", 0)
    AND m."sender_id" <> p2."user_id" AND m."deleted_at" IS NULL
  GROUP BY p2."chat_id", p2."user_id"
) u
WHERE u."chat_id" = p."chat_id" AND u."user_id" = p."user_id";
--> statement-breakpoint
UPDATE "user_streams" s SET "unread_total" = t.n
FROM (SELECT "user_id", sum("unread_count") AS n FROM "chat_participants" GROUP BY "user_id") t
WHERE t."user_id" = s."user_id";
--> statement-breakpoint
CREATE INDEX "chat_participants_user_unread_idx" ON "chat_participants" USING btree ("user_id","last_activity_at" DESC NULLS FIRST,"chat_id" DESC NULLS FIRST) WHERE "chat_participants"."unread_count" > 0;
--> statement-breakpoint
CREATE INDEX "chat_participants_user_activity_idx" ON "chat_participants" USING btree ("user_id","last_activity_at" DESC NULLS FIRST,"chat_id" DESC NULLS FIRST);
--> statement-breakpoint
CREATE OR REPLACE FUNCTION lc_send_messages(p_sends jsonb)
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
  created_recipients bigint[] := '{}';
  v_recipient bigint;
  r record;
BEGIN
  FOR x IN
    SELECT e.ord, (e.v->>0)::bigint AS sender_id, (e.v->>1)::bigint AS chat_id, e.v->>2 AS content,
      e.v->>3 AS client_msg_id
    FROM jsonb_array_elements(p_sends) WITH ORDINALITY AS e(v, ord)
  LOOP
    ord := x.ord; message := NULL; user_id := NULL; event_id := NULL;
    SELECT CASE WHEN c.buyer_id = x.sender_id THEN c.seller_id ELSE c.buyer_id END INTO v_recipient
    FROM chats c WHERE c.id = x.chat_id AND x.sender_id IN (c.buyer_id, c.seller_id);
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
      created_recipients := created_recipients || v_recipient;
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
  -- Per chat (ascending): activity, the newest message, and each participant's unread count (others'
  -- messages). greatest(): concurrent batches commit in any order, and none of it moves back.
  FOR v_chat_id IN SELECT DISTINCT u.id FROM unnest(created_chats) AS u(id) ORDER BY u.id LOOP
    UPDATE chats c SET last_activity_at = greatest(c.last_activity_at, now()),
      last_message_id = greatest(c.last_message_id,
        (SELECT max(created_ids[i]) FROM generate_subscripts(created_ids, 1) AS i WHERE created_chats[i] = v_chat_id))
    WHERE c.id = v_chat_id;
    UPDATE chat_participants p SET last_activity_at = greatest(p.last_activity_at, now()),
      unread_count = p.unread_count +
        (SELECT count(*) FROM generate_subscripts(created_ids, 1) AS i
         WHERE created_chats[i] = v_chat_id AND created_recipients[i] = p.user_id)
    WHERE p.chat_id = v_chat_id;
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
  -- The recipients' badge totals, on the stream rows the append has just locked (ascending user id), one
  -- key lookup each (a join with a table here is planned for a batch of unknown size and scans it whole).
  FOR r IN SELECT u.user_id, count(*) AS n FROM unnest(created_recipients) AS u(user_id) GROUP BY 1 ORDER BY 1
  LOOP
    UPDATE user_streams s SET unread_total = s.unread_total + r.n WHERE s.user_id = r.user_id;
  END LOOP;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION lc_delete_message(p_user_id bigint, p_message_id bigint)
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  v_json jsonb;
  v_recipient chat_participants;
BEGIN
  SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
  IF NOT FOUND OR NOT EXISTS (SELECT FROM chats c WHERE c.id = m.chat_id AND p_user_id IN (c.buyer_id, c.seller_id)) THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  IF m.sender_id <> p_user_id THEN
    status := 'forbidden'; RETURN NEXT; RETURN;
  END IF;
  -- The recipient's row first (participants before messages, as everywhere): its read marker cannot move
  -- while this decides whether the message was unread for them.
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
  UPDATE chat_events e SET payload = jsonb_set(e.payload, '{message,content}', '""'::jsonb)
  WHERE e.message_id = m.id AND e.type IN ('new_message', 'message_edited');
  v_json := lc_message_json(m);
  RETURN QUERY
  SELECT 'deleted'::text, v_json, a.user_id, a.event_id
  FROM lc_append_events(ARRAY[m.chat_id], ARRAY['message_deleted'], ARRAY[m.id],
    ARRAY[jsonb_build_object('chat_id', m.chat_id, 'message', v_json)]) AS a;
  -- A message the recipient had not read leaves their unread count (the stream row is locked already).
  IF m.id > coalesce(v_recipient.last_read_message_id, 0) THEN
    UPDATE chat_participants p SET unread_count = greatest(p.unread_count - 1, 0)
    WHERE p.chat_id = v_recipient.chat_id AND p.user_id = v_recipient.user_id;
    UPDATE user_streams s SET unread_total = greatest(s.unread_total - 1, 0) WHERE s.user_id = v_recipient.user_id;
  END IF;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION lc_mark_read(p_user_id bigint, p_chat_id bigint, p_message_id bigint)
RETURNS TABLE (status text, unread_count bigint, read_at text, user_id bigint, event_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_before integer;
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
  WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id AND coalesce(p.last_read_message_id, 0) < p_message_id
  RETURNING p.unread_count INTO v_before;
  IF NOT FOUND THEN
    -- Already there or further: the kept count answers, nothing is counted.
    SELECT p.unread_count INTO v_unread FROM chat_participants p WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
    status := 'unchanged'; unread_count := v_unread; RETURN NEXT; RETURN;
  END IF;
  -- What is left after the new marker (usually nothing: the page reads up to the newest). The row is locked,
  -- so no send or delete changes the count between this and the update below.
  SELECT count(*) INTO v_unread FROM messages mm
  WHERE mm.chat_id = p_chat_id AND mm.id > p_message_id AND mm.sender_id <> p_user_id AND mm.deleted_at IS NULL;
  UPDATE chat_participants p SET unread_count = v_unread WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id;
  status := 'read';
  RETURN QUERY
  SELECT 'read'::text, v_unread, lc_iso(now()), a.user_id, a.event_id
  FROM lc_append_events(ARRAY[p_chat_id], ARRAY['message_read'], ARRAY[p_message_id],
    ARRAY[jsonb_build_object('chat_id', p_chat_id, 'message_id', p_message_id, 'read_by', p_user_id,
      'read_at', lc_iso(now()))]) AS a;
  UPDATE user_streams s SET unread_total = greatest(s.unread_total + (v_unread - v_before), 0) WHERE s.user_id = p_user_id;
END
$$;
