-- migrate: after lc_iso
-- A message as the API shows it (db/rows.ts toMessage). The platform's sender id (0) is shown as null; a
-- message deleted before 0023 (no deleted_by) was deleted by its sender; `attachments` are an image message's
-- photos (CONTRACT §11, stored as shown since 0029), [] for the others and once deleted.
CREATE OR REPLACE FUNCTION lc_message_json(m messages) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', m.id, 'chat_id', m.chat_id, 'sender_id', nullif(m.sender_id, 0), 'kind', m.kind,
    -- A deleted message keeps its id and loses its content (and a system message its data).
    'content', CASE WHEN m.deleted_at IS NULL THEN m.content ELSE '' END,
    'data', CASE WHEN m.deleted_at IS NULL THEN m.data END,
    'attachments', CASE WHEN m.deleted_at IS NULL THEN coalesce(m.attachments, '[]'::jsonb) ELSE '[]'::jsonb END,
    'client_msg_id', m.client_msg_id, 'created_at', lc_iso(m.created_at),
    'edited_at', lc_iso(m.edited_at), 'deleted_at', lc_iso(m.deleted_at),
    'deleted_by', CASE WHEN m.deleted_at IS NOT NULL THEN coalesce(m.deleted_by, 'sender') END)
$$;
