-- migrate: after lc_webhooks_on, lc_webhook_message_data, lc_append_events, lc_message_json
-- One batch of the erasure of person `p_user_id` (CONTRACT §12), in a transaction of its own: the erasure's row is
-- taken FOR UPDATE SKIP LOCKED, so one instance works an erasure at a time, and a batch that dies rolls back and
-- is done again by whoever takes the row next (every step is written to be done twice without harm). Steps, in
-- order (erasures.step):
--   start     list their chats in erasure_chats; remove their name and avatar (people), the blocks and reports
--             they made, and what the old safety outbox holds of those;
--   messages  `p_batch` of their messages in the first chat left: content, data, photos, client_msg_id and flags
--             removed; those not deleted yet become deleted by the platform (reason `erasure`), and both
--             participants hear message_deleted (the other's unread count and total move as for any delete;
--             `message.deleted` is recorded while webhooks are on). Messages deleted before keep how and when
--             they were deleted, and lose their text (kept until now for moderation);
--   streams   their own stream: user_events after `cursor`, `p_batch` at a time, with the events of no chat that
--             only they heard (user_blocked: whom they blocked), then their stream row;
--   webhooks  the outbox after `cursor`, 1,000 rows at a time: copies of their messages are replaced by the
--             message as it is now (erased), reports they made and their blocks' deliveries are removed;
--   uploads   once every statement that began before the first step has ended, a last look for anything of theirs
--             stored meanwhile (a send, report or block that passed its check before the request committed: then
--             the erasure starts over); their photos due for the sweeper (one whose presigned PUT is still valid,
--             `p_put_window_s` after its grant, once it is not); done once none is left (the sweeper removes the
--             objects, then the rows): then `user.erased`.
-- Status (one row, or one per participant told): busy (another instance holds it, or it is not under way),
-- worked (a batch done; `message` and the event ids of each message_deleted appended), waiting (for statements
-- older than the request), restarted (something of theirs was stored after the first step: it runs again),
-- waiting_uploads (their photos are still in the storage: the caller sweeps
-- and comes back), erased (complete now).
-- Locks, in the order every write keeps (functions/README.md): the erasure's row (no writer takes it), then in the
-- messages step the chat's row, its participants, its messages, and the streams last (lc_append_events).
CREATE OR REPLACE FUNCTION lc_erasure_step(p_user_id bigint, p_batch integer, p_put_window_s integer)
RETURNS TABLE (status text, message jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  e erasures;
  ec erasure_chats;
  v_other bigint;
  v_other_read bigint;
  v_other_unread bigint;
  v_ids bigint[];
  v_newly bigint[];
  v_unread bigint;
  v_last bigint;
  v_json jsonb[];
  v_count integer;
BEGIN
  SELECT * INTO e FROM erasures ee WHERE ee.user_id = p_user_id AND ee.completed_at IS NULL FOR UPDATE SKIP LOCKED;
  IF NOT FOUND THEN
    status := 'busy'; RETURN NEXT; RETURN;
  END IF;

  IF e.step = 'start' THEN
    INSERT INTO erasure_chats (user_id, chat_id)
    SELECT p_user_id, p.chat_id FROM chat_participants p WHERE p.user_id = p_user_id
    ON CONFLICT DO NOTHING;
    DELETE FROM people pp WHERE pp.user_id = p_user_id;
    DELETE FROM blocks b WHERE b.blocker_id = p_user_id;
    DELETE FROM reports r WHERE r.reporter_id = p_user_id;
    -- Empty since 0027 but for rows a release before wrote during a rollout: few rows, read whole.
    DELETE FROM safety_events s
    WHERE (s.data->'report'->>'reporter_id')::bigint = p_user_id OR (s.data->>'blocker_id')::bigint = p_user_id;
    -- The clock now, not now() (this transaction's start): the request is visible to every session from here on.
    UPDATE erasures ee SET step = 'messages', cursor = 0, listed_at = clock_timestamp() WHERE ee.user_id = p_user_id;
    status := 'worked'; RETURN NEXT; RETURN;
  END IF;

  IF e.step = 'messages' THEN
    SELECT * INTO ec FROM erasure_chats x WHERE x.user_id = p_user_id ORDER BY x.chat_id LIMIT 1;
    IF NOT FOUND THEN
      UPDATE erasures ee SET step = 'streams', cursor = 0 WHERE ee.user_id = p_user_id;
      status := 'worked'; RETURN NEXT; RETURN;
    END IF;
    -- Their next messages here, found before any lock: in a chat of a million messages from the other side the
    -- scan is long, and sends to the chat must not wait for it.
    SELECT array_agg(mm.id ORDER BY mm.id) INTO v_ids
    FROM (SELECT m0.id FROM messages m0
          WHERE m0.chat_id = ec.chat_id AND m0.id > ec.after_message_id AND m0.sender_id = p_user_id
          ORDER BY m0.id LIMIT p_batch) mm;
    v_count := coalesce(cardinality(v_ids), 0);
    IF v_count < p_batch THEN
      DELETE FROM erasure_chats x WHERE x.user_id = p_user_id AND x.chat_id = ec.chat_id;
    ELSE
      UPDATE erasure_chats x SET after_message_id = v_ids[v_count]
      WHERE x.user_id = p_user_id AND x.chat_id = ec.chat_id;
    END IF;
    IF v_count = 0 THEN
      status := 'worked'; RETURN NEXT; RETURN;
    END IF;
    PERFORM FROM chats c WHERE c.id = ec.chat_id FOR NO KEY UPDATE;
    -- Both rows, in user order, as a send takes them: the other's read marker and count cannot move meanwhile.
    PERFORM FROM chat_participants p WHERE p.chat_id = ec.chat_id ORDER BY p.user_id FOR UPDATE;
    SELECT p.user_id, p.last_read_message_id, p.unread_count INTO v_other, v_other_read, v_other_unread
    FROM chat_participants p
    WHERE p.chat_id = ec.chat_id AND p.user_id <> p_user_id;
    -- No reminder of unread messages goes to a person being erased.
    UPDATE chat_participants p SET unread_since = NULL, unread_notified = false
    WHERE p.chat_id = ec.chat_id AND p.user_id = p_user_id AND (p.unread_since IS NOT NULL OR p.unread_notified);
    -- Locked, then read as they are now: which are still live (a platform delete may have come meanwhile).
    SELECT array_agg(m.id ORDER BY m.id) FILTER (WHERE m.deleted_at IS NULL) INTO v_newly
    FROM (SELECT mm.id, mm.deleted_at FROM messages mm WHERE mm.id = ANY(v_ids) ORDER BY mm.id FOR UPDATE) m;
    v_newly := coalesce(v_newly, '{}');
    -- The trigger of 0029 (lc_release_message_photos) makes the photos of a message deleted here due for the
    -- sweeper; those of messages deleted before were made due then.
    UPDATE messages mm SET content = '', data = NULL, attachments = NULL, client_msg_id = NULL, flags = '{}',
      deleted_at = coalesce(mm.deleted_at, now()), deleted_by = 'platform',
      delete_reason = coalesce(mm.delete_reason, 'erasure')
    WHERE mm.id = ANY(v_ids)
      -- Not again in a second pass (the erasure started over): only what is not erased yet.
      AND (mm.deleted_at IS NULL OR mm.deleted_by IS DISTINCT FROM 'platform' OR mm.content <> ''
           OR mm.client_msg_id IS NOT NULL OR mm.data IS NOT NULL OR mm.attachments IS NOT NULL OR mm.flags <> '{}');
    IF cardinality(v_newly) = 0 THEN
      status := 'worked'; RETURN NEXT; RETURN;
    END IF;
    -- Those the other had not read leave their count (never more than it holds).
    SELECT least(count(*), coalesce(v_other_unread, 0)) INTO v_unread
    FROM unnest(v_newly) AS n(id) WHERE n.id > coalesce(v_other_read, 0);
    IF v_unread > 0 THEN
      UPDATE chat_participants p SET unread_count = greatest(p.unread_count - v_unread, 0)
      WHERE p.chat_id = ec.chat_id AND p.user_id = v_other;
    END IF;
    SELECT array_agg(lc_message_json(mm) ORDER BY mm.id) INTO v_json FROM messages mm WHERE mm.id = ANY(v_newly);
    IF lc_webhooks_on() THEN
      INSERT INTO webhook_deliveries (type, data)
      SELECT 'message.deleted', lc_webhook_message_data(mm) FROM messages mm WHERE mm.id = ANY(v_newly) ORDER BY mm.id;
    END IF;
    RETURN QUERY
    SELECT 'worked'::text, v_json[a.ord::integer], a.user_id, a.event_id
    FROM lc_append_events(array_fill(ec.chat_id, ARRAY[cardinality(v_newly)]),
      array_fill('message_deleted'::text, ARRAY[cardinality(v_newly)]), v_newly,
      ARRAY(SELECT jsonb_build_object('chat_id', ec.chat_id, 'message', j) FROM unnest(v_json) AS j),
      CASE WHEN v_unread > 0 THEN ARRAY[v_other] ELSE '{}'::bigint[] END,
      CASE WHEN v_unread > 0 THEN ARRAY[-v_unread] ELSE '{}'::bigint[] END) AS a;
    RETURN;
  END IF;

  IF e.step = 'streams' THEN
    -- Their stream's end first (the last lock every writer takes, and the only one here): no event is appended to
    -- it while this batch reads and removes, so the last batch leaves none behind the row it deletes.
    PERFORM FROM user_streams s WHERE s.user_id = p_user_id FOR UPDATE;
    SELECT array_agg(ue.event_id ORDER BY ue.event_id), max(ue.event_id) INTO v_ids, v_last
    FROM (SELECT u.event_id FROM user_events u WHERE u.user_id = p_user_id AND u.event_id > e.cursor
          ORDER BY u.event_id LIMIT p_batch) ue;
    v_count := coalesce(cardinality(v_ids), 0);
    IF v_count > 0 THEN
      -- Events of no chat are one user's own (lc_append_user_event: whom they blocked or unblocked).
      DELETE FROM chat_events ce
      WHERE ce.id IN (SELECT u.chat_event_id FROM user_events u WHERE u.user_id = p_user_id AND u.event_id = ANY(v_ids))
        AND ce.chat_id IS NULL;
      DELETE FROM user_events u WHERE u.user_id = p_user_id AND u.event_id = ANY(v_ids);
    END IF;
    IF v_count < p_batch THEN
      DELETE FROM user_streams s WHERE s.user_id = p_user_id;
      UPDATE erasures ee SET step = 'webhooks', cursor = 0 WHERE ee.user_id = p_user_id;
    ELSE
      UPDATE erasures ee SET cursor = v_last WHERE ee.user_id = p_user_id;
    END IF;
    status := 'worked'; RETURN NEXT; RETURN;
  END IF;

  IF e.step = 'webhooks' THEN
    SELECT max(w.id), count(*) INTO v_last, v_count
    FROM (SELECT ww.id FROM webhook_deliveries ww WHERE ww.id > e.cursor ORDER BY ww.id LIMIT 1000) w;
    IF v_count > 0 THEN
      -- Their messages as they are now: erased (one that retention removed since: its text blanked). The copy in
      -- a report.created is under `report`: a report about them keeps the message it reported, as `reports` does.
      UPDATE webhook_deliveries w SET data = CASE
          WHEN t.message_id IS NULL AND w.type = 'notification.unread'
          THEN jsonb_set(w.data, '{last_message}', w.data->'last_message' || '{"content": "", "data": null, "attachments": []}')
          WHEN t.message_id IS NULL
          THEN jsonb_set(w.data, '{message}', w.data->'message' || '{"content": "", "data": null, "attachments": []}')
          WHEN w.type = 'notification.unread' THEN jsonb_set(w.data, '{last_message}', lc_message_json(t.m))
          ELSE lc_webhook_message_data(t.m)
        END
      FROM (SELECT x.id, mm.id AS message_id, mm AS m FROM webhook_deliveries x
            LEFT JOIN messages mm ON mm.id = coalesce(x.data->'message'->>'id', x.data->'last_message'->>'id')::bigint
            WHERE x.id > e.cursor AND x.id <= v_last
              AND p_user_id IN ((x.data->'message'->>'sender_id')::bigint, (x.data->'last_message'->>'sender_id')::bigint)) t
      WHERE w.id = t.id;
      DELETE FROM webhook_deliveries w
      WHERE w.id > e.cursor AND w.id <= v_last
        AND ((w.type = 'report.created' AND (w.data->'report'->>'reporter_id')::bigint = p_user_id)
          OR (w.type IN ('user.blocked', 'user.unblocked') AND (w.data->>'blocker_id')::bigint = p_user_id));
    END IF;
    IF v_count < 1000 THEN
      UPDATE erasures ee SET step = 'uploads', cursor = 0 WHERE ee.user_id = p_user_id;
    ELSE
      UPDATE erasures ee SET cursor = v_last WHERE ee.user_id = p_user_id;
    END IF;
    status := 'worked'; RETURN NEXT; RETURN;
  END IF;

  -- uploads, the last step. A send, report or block that ran its check before the request was visible may store
  -- after it: first (once: `cursor` 1 once done) the erasure waits until no statement that began before its first
  -- step (`listed_at`) is still running (every write is one statement), then looks for anything of theirs stored
  -- since, and if it finds any, starts over from the first step. After the request nothing new of theirs is
  -- accepted (they are suspended, and lc_report, lc_block_user and the upload grant refuse them), so a second pass
  -- is the last, unless the platform lifts the suspension meanwhile.
  IF e.cursor = 0 THEN
    IF EXISTS (
        SELECT FROM pg_stat_activity a
        WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'
          AND a.state = 'active' AND a.query_start < coalesce(e.listed_at, e.requested_at + interval '5 seconds')) THEN
      status := 'waiting'; RETURN NEXT; RETURN;
    END IF;
    IF EXISTS (SELECT FROM messages mm WHERE mm.sender_id = p_user_id
                 AND (mm.deleted_by IS DISTINCT FROM 'platform' OR mm.content <> '' OR mm.client_msg_id IS NOT NULL
                      OR mm.data IS NOT NULL OR mm.attachments IS NOT NULL))
       OR EXISTS (SELECT FROM reports r WHERE r.reporter_id = p_user_id)
       OR EXISTS (SELECT FROM blocks b WHERE b.blocker_id = p_user_id) THEN
      UPDATE erasures ee SET step = 'start', cursor = 0 WHERE ee.user_id = p_user_id;
      status := 'restarted'; RETURN NEXT; RETURN;
    END IF;
    UPDATE erasures ee SET cursor = 1 WHERE ee.user_id = p_user_id;
  END IF;
  -- Their photos due for the sweeper: now, or, for one whose bytes may still arrive (its presigned PUT is valid
  -- `p_put_window_s` after the grant), once they no longer can, so that no original lands after its row is gone.
  -- A sweep's claim (sweep_after moved ahead by 10 minutes at most) is left to it, and so is a row swept once and
  -- due again at the end of its PUT window (media/sweeper.ts: a sent photo's original could be PUT again until
  -- then); the erasure completes once every row is gone.
  UPDATE uploads u
  SET sweep_after = CASE WHEN u.processed_at IS NULL
                         THEN greatest(now(), u.created_at + make_interval(secs => p_put_window_s)) ELSE now() END
  WHERE u.user_id = p_user_id
    AND (u.sweep_after IS NULL
         OR u.sweep_after > greatest(now(), u.created_at + make_interval(secs => p_put_window_s)) + interval '10 minutes');
  IF EXISTS (SELECT FROM uploads u WHERE u.user_id = p_user_id) THEN
    status := 'waiting_uploads'; RETURN NEXT; RETURN;
  END IF;
  -- Their name and avatar once more, in the transaction that completes: a PUT by the platform during the erasure
  -- (a sync) is removed here, with no pass again for it. One after `user.erased` is the platform's to answer for.
  DELETE FROM people pp WHERE pp.user_id = p_user_id;
  UPDATE erasures ee SET step = 'done', cursor = 0, completed_at = now() WHERE ee.user_id = p_user_id;
  DELETE FROM erasure_chats x WHERE x.user_id = p_user_id;
  IF lc_webhooks_on() THEN
    INSERT INTO webhook_deliveries (type, data) VALUES ('user.erased', jsonb_build_object('user_id', p_user_id));
  END IF;
  status := 'erased'; RETURN NEXT;
END
$$;
