CREATE TABLE "blocks" (
	"blocker_id" bigint NOT NULL,
	"blocked_id" bigint NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "blocks_blocker_id_blocked_id_pk" PRIMARY KEY("blocker_id","blocked_id"),
	CONSTRAINT "blocks_not_self" CHECK ("blocks"."blocker_id" <> "blocks"."blocked_id")
);
--> statement-breakpoint
CREATE TABLE "reports" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "reports_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"reporter_id" bigint NOT NULL,
	"reason" text NOT NULL,
	"note" text,
	"target_type" text NOT NULL,
	"target_id" bigint NOT NULL,
	"message" jsonb,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "reports_reason_known" CHECK ("reports"."reason" in ('spam', 'scam', 'harassment', 'inappropriate', 'other')),
	CONSTRAINT "reports_target_known" CHECK ("reports"."target_type" in ('message', 'chat', 'user'))
);
--> statement-breakpoint
CREATE TABLE "safety_events" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "safety_events_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"type" text NOT NULL,
	"data" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "chat_events" ALTER COLUMN "chat_id" DROP NOT NULL;--> statement-breakpoint
ALTER TABLE "chats" ADD COLUMN "buyer_wrote" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "chats" ADD COLUMN "seller_wrote" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "messages" ADD COLUMN "flags" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX "reports_reporter_target_key" ON "reports" USING btree ("reporter_id","target_type","target_id");--> statement-breakpoint
CREATE INDEX "chats_buyer_seller_idx" ON "chats" USING btree ("buyer_id","seller_id");--> statement-breakpoint
-- Safety (CONTRACT §10): who has written in each chat (presence and typing pass only between two people who
-- both wrote), blocks between two users, reports, and what the platform is to hear about them.
--
-- Who had written before this release: every chat with a message of its buyer, of its seller.
UPDATE "chats" c SET
  "buyer_wrote" = EXISTS (SELECT FROM "messages" m WHERE m."chat_id" = c."id" AND m."sender_id" = c."buyer_id"),
  "seller_wrote" = EXISTS (SELECT FROM "messages" m WHERE m."chat_id" = c."id" AND m."sender_id" = c."seller_id")
WHERE c."last_message_id" IS NOT NULL;
--> statement-breakpoint
-- The advisory lock of a pair of users (either order), in a class of two-int keys of its own (1010), apart
-- from the migrations' bigint key. Sends, edits and opens between two users take it shared, so they go on
-- side by side; a block or an unblock takes it exclusive, so it waits for those already under way to commit,
-- and those after it read the block (PL/pgSQL reads with a new snapshot at each statement). So nothing that
-- checked the pair before a block commits after it: in the blocker's stream, `user_blocked` comes after
-- every message of the other's that got through. A hash collision only makes two pairs wait for each other.
CREATE FUNCTION lc_pair_key(a bigint, b bigint) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT hashtext(least(a, b)::text || ':' || greatest(a, b)::text)
$$;
--> statement-breakpoint
-- Whether either of the two blocks the other: two probes of the blocks' key.
CREATE FUNCTION lc_blocked(a bigint, b bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT FROM blocks bl WHERE bl.blocker_id = a AND bl.blocked_id = b)
    OR EXISTS (SELECT FROM blocks bl WHERE bl.blocker_id = b AND bl.blocked_id = a)
$$;
--> statement-breakpoint
-- Appends an event of one user's own, that belongs to no chat (user_blocked, user_unblocked), to that user's
-- stream, in the caller's transaction, and returns its event_id. Like lc_append_events: one chat_events row
-- (chat_id null), the stream's end bumped as the caller's last lock (held until commit: ids in commit order,
-- a rollback gives it back), so the stream stays dense and replays, polls and gap fills read it as any other.
CREATE FUNCTION lc_append_user_event(p_user_id bigint, p_type text, p_payload jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  v_id bigint;
  v_event_id bigint;
BEGIN
  INSERT INTO chat_events (chat_id, type, message_id, payload) VALUES (NULL, p_type, NULL, p_payload)
  RETURNING id INTO v_id;
  INSERT INTO user_streams AS s (user_id, last_event_id) VALUES (p_user_id, 1)
  ON CONFLICT (user_id) DO UPDATE SET last_event_id = s.last_event_id + 1
  RETURNING s.last_event_id INTO v_event_id;
  INSERT INTO user_events (user_id, event_id, chat_event_id) VALUES (p_user_id, v_event_id, v_id);
  RETURN v_event_id;
END
$$;
--> statement-breakpoint
-- As in 0004, with three changes. Each send is [sender_id, chat_id, content, client_msg_id, flags] (flags a
-- JSON array of the content rules' ids, stored with the message; absent or null: none). A send between two
-- users either of whom blocks the other gets the status `blocked` (a retry of a send stored before the block
-- still gets `repeat`), and the others of the batch are stored. And the chat keeps whether its buyer and its
-- seller have written: `became_mutual` is true on the rows of the one send that made both writers first.
DROP FUNCTION lc_send_messages(jsonb);
--> statement-breakpoint
CREATE FUNCTION lc_send_messages(p_sends jsonb)
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
      IF NOT (c.buyer_wrote AND c.seller_wrote) AND NOT x.chat_id = ANY(unsettled) THEN
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
--> statement-breakpoint
-- As in 0003, with the content rules' flags of the new content (they replace the old ones; null: none), and
-- the status `blocked` while either participant blocks the other: an edit rewrites what the other side
-- already has and tells them, so a blocked user could otherwise go on writing to the blocker through it.
DROP FUNCTION lc_edit_message(bigint, bigint, text);
--> statement-breakpoint
CREATE FUNCTION lc_edit_message(p_user_id bigint, p_message_id bigint, p_content text, p_flags text[])
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  c chats;
  v_json jsonb;
BEGIN
  SELECT * INTO m FROM messages mm WHERE mm.id = p_message_id;
  IF FOUND THEN
    SELECT * INTO c FROM chats cc WHERE cc.id = m.chat_id AND p_user_id IN (cc.buyer_id, cc.seller_id);
  END IF;
  IF NOT FOUND THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  IF m.sender_id <> p_user_id THEN
    status := 'forbidden'; RETURN NEXT; RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock_shared(1010, lc_pair_key(c.buyer_id, c.seller_id));
  IF lc_blocked(c.buyer_id, c.seller_id) THEN
    status := 'blocked'; RETURN NEXT; RETURN;
  END IF;
  -- Re-checked under the row lock: a delete may have committed since the look above.
  UPDATE messages mm SET content = p_content, flags = coalesce(p_flags, '{}'), edited_at = now()
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
-- As in 0003, refusing (`blocked` true, no chat) while either of the two blocks the other, whether the chat
-- exists or not: opening is how one contacts a seller, and the existing chat stays readable through its reads.
DROP FUNCTION lc_open_chat(bigint, bigint, bigint);
--> statement-breakpoint
CREATE FUNCTION lc_open_chat(p_listing_id bigint, p_buyer_id bigint, p_seller_id bigint)
RETURNS TABLE (created boolean, chat jsonb, user_id bigint, event_id bigint, blocked boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  c chats;
  v_json jsonb;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(1010, lc_pair_key(p_buyer_id, p_seller_id));
  IF lc_blocked(p_buyer_id, p_seller_id) THEN
    created := false; blocked := true; RETURN NEXT; RETURN;
  END IF;
  blocked := false;
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
  SELECT true, v_json, a.user_id, a.event_id, false
  FROM lc_append_events(ARRAY[c.id], ARRAY['chat_created'], ARRAY[NULL::bigint],
    ARRAY[jsonb_build_object('chat', v_json)]) AS a;
END
$$;
--> statement-breakpoint
-- `p_blocker` blocks `p_blocked`. Status: blocked (new: the block, its safety event, and `user_blocked` in the
-- blocker's stream, whose event_id is returned), unchanged (blocked already), too_many (the blocker blocks
-- `p_max` users already). Under the pair's lock taken exclusive (lc_pair_key), so two calls for one pair,
-- in either direction, run one after the other.
CREATE FUNCTION lc_block_user(p_blocker bigint, p_blocked bigint, p_max integer)
RETURNS TABLE (status text, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM pg_advisory_xact_lock(1010, lc_pair_key(p_blocker, p_blocked));
  PERFORM FROM blocks bl WHERE bl.blocker_id = p_blocker AND bl.blocked_id = p_blocked;
  IF FOUND THEN
    status := 'unchanged'; RETURN NEXT; RETURN;
  END IF;
  IF (SELECT count(*) FROM (SELECT FROM blocks bl WHERE bl.blocker_id = p_blocker LIMIT p_max) AS mine) >= p_max THEN
    status := 'too_many'; RETURN NEXT; RETURN;
  END IF;
  INSERT INTO blocks (blocker_id, blocked_id) VALUES (p_blocker, p_blocked);
  INSERT INTO safety_events (type, data)
  VALUES ('user.blocked', jsonb_build_object('blocker_id', p_blocker, 'blocked_id', p_blocked));
  status := 'blocked';
  event_id := lc_append_user_event(p_blocker, 'user_blocked', jsonb_build_object('user_id', p_blocked));
  RETURN NEXT;
END
$$;
--> statement-breakpoint
-- `p_blocker` lifts their block of `p_blocked`. Status: unblocked (with `user_unblocked` in the blocker's
-- stream, its event_id returned, and its safety event), unchanged (there was no such block).
CREATE FUNCTION lc_unblock_user(p_blocker bigint, p_blocked bigint)
RETURNS TABLE (status text, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM pg_advisory_xact_lock(1010, lc_pair_key(p_blocker, p_blocked));
  DELETE FROM blocks bl WHERE bl.blocker_id = p_blocker AND bl.blocked_id = p_blocked;
  IF NOT FOUND THEN
    status := 'unchanged'; RETURN NEXT; RETURN;
  END IF;
  INSERT INTO safety_events (type, data)
  VALUES ('user.unblocked', jsonb_build_object('blocker_id', p_blocker, 'blocked_id', p_blocked));
  status := 'unblocked';
  event_id := lc_append_user_event(p_blocker, 'user_unblocked', jsonb_build_object('user_id', p_blocked));
  RETURN NEXT;
END
$$;
--> statement-breakpoint
-- A report by `p_reporter` of a message, a chat or a user (`p_target_type`, `p_target_id`). Status:
--   not_found  a message or chat the reporter takes no part in, or a user who shares no chat with them;
--   own        their own message, or themselves;
--   existing   they reported this target before: that report's id (whatever its reason);
--   new        (with p_store false) it would be a new report: nothing stored, so that the caller can count
--              it against the reporter's limit first;
--   created    stored, with its id: the report (a message's copy as the API shows it now, kept whatever
--              happens to the message later) and its `report.created` safety event, `data` as CONTRACT §9.
CREATE FUNCTION lc_report(p_reporter bigint, p_reason text, p_note text, p_target_type text, p_target_id bigint,
  p_store boolean)
RETURNS TABLE (status text, id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  v_copy jsonb;
  v_id bigint;
BEGIN
  IF p_target_type = 'message' THEN
    SELECT * INTO m FROM messages mm WHERE mm.id = p_target_id
      AND EXISTS (SELECT FROM chats c WHERE c.id = mm.chat_id AND p_reporter IN (c.buyer_id, c.seller_id));
    IF NOT FOUND THEN
      status := 'not_found'; RETURN NEXT; RETURN;
    END IF;
    IF m.sender_id = p_reporter THEN
      status := 'own'; RETURN NEXT; RETURN;
    END IF;
    v_copy := lc_message_json(m);
  ELSIF p_target_type = 'chat' THEN
    PERFORM FROM chats c WHERE c.id = p_target_id AND p_reporter IN (c.buyer_id, c.seller_id);
    IF NOT FOUND THEN
      status := 'not_found'; RETURN NEXT; RETURN;
    END IF;
  ELSIF p_target_type = 'user' THEN
    IF p_target_id = p_reporter THEN
      status := 'own'; RETURN NEXT; RETURN;
    END IF;
    -- Two probes of chats_buyer_seller_idx, one per role.
    IF NOT EXISTS (SELECT FROM chats c WHERE c.buyer_id = p_reporter AND c.seller_id = p_target_id)
       AND NOT EXISTS (SELECT FROM chats c WHERE c.buyer_id = p_target_id AND c.seller_id = p_reporter) THEN
      status := 'not_found'; RETURN NEXT; RETURN;
    END IF;
  ELSE
    RAISE EXCEPTION 'unknown report target type %', p_target_type;
  END IF;
  SELECT r.id INTO v_id FROM reports r
  WHERE r.reporter_id = p_reporter AND r.target_type = p_target_type AND r.target_id = p_target_id;
  IF FOUND THEN
    status := 'existing'; id := v_id; RETURN NEXT; RETURN;
  END IF;
  IF NOT p_store THEN
    status := 'new'; RETURN NEXT; RETURN;
  END IF;
  INSERT INTO reports AS r (reporter_id, reason, note, target_type, target_id, message)
  VALUES (p_reporter, p_reason, p_note, p_target_type, p_target_id, v_copy)
  ON CONFLICT DO NOTHING
  RETURNING r.id INTO v_id;
  IF NOT FOUND THEN
    -- A concurrent report of the same target committed between the look above and this insert.
    SELECT r.id INTO v_id FROM reports r
    WHERE r.reporter_id = p_reporter AND r.target_type = p_target_type AND r.target_id = p_target_id;
    status := 'existing'; id := v_id; RETURN NEXT; RETURN;
  END IF;
  INSERT INTO safety_events (type, data)
  VALUES ('report.created', jsonb_build_object('report', jsonb_build_object(
    'id', v_id, 'reporter_id', p_reporter, 'reason', p_reason, 'note', p_note,
    'target', jsonb_build_object('type', p_target_type, 'id', p_target_id), 'message', v_copy)));
  status := 'created'; id := v_id; RETURN NEXT;
END
$$;
