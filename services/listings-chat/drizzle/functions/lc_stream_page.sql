-- migrate: after lc_chat_context, lc_chat_json, lc_iso, lc_message_json
-- A page of `p_user_id`'s stream after `p_after` (up to `p_up_to` when given), oldest first: at most
-- `p_max_events` events and, after the first, no more than `p_max_bytes` of payload, so that a page of long
-- messages is as light as a page of short ones (a replay writes a page, waits for the socket to drain, reads
-- the next). A range scan of the stream's key that stops at the page's end. When the bytes cut the page
-- short, a last row with a NULL type says so (its event_id is the first one left out); when the count
-- does, the caller knows from the count. A message's events carry the message as it is now (edited, or
-- deleted: empty), read from the message itself; the events do not keep a copy (see 0006).
-- Without sorts since the event tables are partitioned (see below). chat_created and chat_updated carry the
-- chat's fields as stored with the event and its listing, peer and archived as the reader sees them now
-- (lc_chat_context), as message events carry the message as it is now.
-- An event about a message that MESSAGE_RETENTION_DAYS removed (an edit or a delete of it younger than the
-- retention, kept while the message went) carries it as it is now: gone, so deleted by the platform, with no
-- content and no sender, dated by the event (the message's own dates went with it). Without it the event would
-- have no `message`, which every reader of these events relies on; skipping it instead would leave a hole in the
-- stream, which a hub filling a gap (hub/sequencer.ts) would wait on for ever.
-- A stream's first rows whose event the retention removed already (lc_retention_events_step, until
-- lc_retention_streams_step removes them too) are left out by the join: a cursor before them reads from the first kept.
CREATE OR REPLACE FUNCTION lc_stream_page(p_user_id bigint, p_after bigint, p_up_to bigint, p_max_events integer, p_max_bytes integer)
RETURNS TABLE (event_id bigint, type text, payload jsonb) LANGUAGE plpgsql STABLE
-- The order comes from the key of each partition of user_events, merged (0021): for a short range (a gap of a
-- few events) the planner would rather sort what it reads, and a plan kept generic for a session would then
-- sort every event after the cursor of a user with 100,000. No sort: the cost is the page's, never the stream's.
SET enable_sort = off
AS $$
#variable_conflict use_column
DECLARE
  v_bytes bigint := 0;
  v_count integer := 0;
BEGIN
  FOR event_id, type, payload IN
    SELECT ue.event_id, ce.type,
      CASE WHEN ce.type IN ('new_message', 'message_edited', 'message_deleted') AND m.id IS NOT NULL
        THEN ce.payload || jsonb_build_object('message', lc_message_json(m))
        WHEN ce.type IN ('new_message', 'message_edited', 'message_deleted') AND ce.message_id IS NOT NULL
        THEN ce.payload || jsonb_build_object('message', jsonb_build_object(
          'id', ce.message_id, 'chat_id', ce.chat_id, 'sender_id', NULL, 'kind', 'text', 'content', '', 'data', NULL,
          'attachments', '[]'::jsonb, 'client_msg_id', NULL, 'created_at', lc_iso(ce.created_at), 'edited_at', NULL,
          'deleted_at', lc_iso(ce.created_at), 'deleted_by', 'platform'))
        -- A chat's events carry the chat's fields as the event stored them (its activity then, as the live
        -- event had it), with its listing, the other's name and archived as this user sees them now (0023).
        WHEN ce.type IN ('chat_created', 'chat_updated')
        THEN ce.payload || coalesce(
          (SELECT jsonb_build_object('chat', coalesce(ce.payload->'chat', lc_chat_json(c)) || lc_chat_context(c, p_user_id))
           FROM chats c WHERE c.id = ce.chat_id), '{}')
        ELSE ce.payload END
    FROM user_events ue JOIN chat_events ce ON ce.id = ue.chat_event_id
    LEFT JOIN messages m ON m.id = ce.message_id
    WHERE ue.user_id = p_user_id AND ue.event_id > p_after
      AND ue.event_id <= coalesce(p_up_to, 9223372036854775807)
    ORDER BY ue.event_id
    LIMIT p_max_events
  LOOP
    v_bytes := v_bytes + octet_length(payload::text);
    IF v_count > 0 AND v_bytes > p_max_bytes THEN
      type := NULL;
      payload := NULL;
      RETURN NEXT;
      RETURN;
    END IF;
    v_count := v_count + 1;
    RETURN NEXT;
  END LOOP;
END
$$;
