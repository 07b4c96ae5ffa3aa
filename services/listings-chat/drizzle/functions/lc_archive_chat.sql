-- migrate: after lc_append_user_event, lc_chat_view, lc_chat_json
-- A user archives a chat (`p_archived` true) or brings it back (false), for themselves only (CONTRACT §8).
-- Status: changed (one row: the chat as they see it now, and the event_id of the chat_updated appended to
-- their stream only), unchanged (it already was: nothing written, no event), not_found (no such chat, or not a
-- participant). One row of chat_participants, then the user's stream row.
CREATE OR REPLACE FUNCTION lc_archive_chat(p_user_id bigint, p_chat_id bigint, p_archived boolean)
RETURNS TABLE (status text, chat jsonb, user_id bigint, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  c chats;
BEGIN
  SELECT * INTO c FROM chats cc WHERE cc.id = p_chat_id AND p_user_id IN (cc.buyer_id, cc.seller_id);
  IF NOT FOUND THEN
    status := 'not_found'; RETURN NEXT; RETURN;
  END IF;
  UPDATE chat_participants p SET archived = p_archived
  WHERE p.chat_id = p_chat_id AND p.user_id = p_user_id AND p.archived <> p_archived;
  IF NOT FOUND THEN
    status := 'unchanged'; chat := lc_chat_view(c, p_user_id); RETURN NEXT; RETURN;
  END IF;
  status := 'changed';
  chat := lc_chat_view(c, p_user_id);
  user_id := p_user_id;
  -- The chat's fields as now (what the live event shows); readers add its listing, peer and archived as they
  -- are when the stream is read (lc_stream_page).
  event_id := lc_append_user_event(p_user_id, 'chat_updated', jsonb_build_object('chat', lc_chat_json(c)), p_chat_id);
  RETURN NEXT;
END
$$;
