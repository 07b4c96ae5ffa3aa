-- migrate: after lc_erased, lc_webhooks_on, lc_message_json
-- A report by `p_reporter` of a message, a chat or a user (`p_target_type`, `p_target_id`). Status:
--   not_found  a message or chat the reporter takes no part in, or a user who shares no chat with them;
--   own        their own message, or themselves;
--   existing   they reported this target before: that report's id (whatever its reason);
--   new        (with p_store false) it would be a new report: nothing stored, so that the caller can count
--              it against the reporter's limit first;
--   erased     the reporter is being erased, or was and is still suspended (lc_erased, CONTRACT §12);
--   created    stored, with its id: the report (a message's copy as the API shows it now, kept whatever
--              happens to the message later) and its `report.created` webhook (0027: while lc_webhooks_on()), `data` as CONTRACT §9.
CREATE OR REPLACE FUNCTION lc_report(p_reporter bigint, p_reason text, p_note text, p_target_type text, p_target_id bigint,
  p_store boolean)
RETURNS TABLE (status text, id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  m messages;
  v_copy jsonb;
  v_id bigint;
BEGIN
  IF lc_erased(p_reporter) THEN
    status := 'erased'; RETURN NEXT; RETURN;
  END IF;
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
  IF lc_webhooks_on() THEN
    INSERT INTO webhook_deliveries (type, data)
    VALUES ('report.created', jsonb_build_object('report', jsonb_build_object(
      'id', v_id, 'reporter_id', p_reporter, 'reason', p_reason, 'note', p_note,
      'target', jsonb_build_object('type', p_target_type, 'id', p_target_id), 'message', v_copy)));
  END IF;
  status := 'created'; id := v_id; RETURN NEXT;
END
$$;
