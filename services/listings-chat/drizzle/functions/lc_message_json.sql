-- migrate: after lc_iso
-- A message as the API shows it (db/rows.ts toMessage).
CREATE OR REPLACE FUNCTION lc_message_json(m messages) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', m.id, 'chat_id', m.chat_id, 'sender_id', m.sender_id,
    -- A deleted message keeps its id and loses its content.
    'content', CASE WHEN m.deleted_at IS NULL THEN m.content ELSE '' END,
    'client_msg_id', m.client_msg_id, 'created_at', lc_iso(m.created_at),
    'edited_at', lc_iso(m.edited_at), 'deleted_at', lc_iso(m.deleted_at))
$$;
