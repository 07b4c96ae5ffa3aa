-- migrate: after lc_chat_json, lc_chat_context
-- A chat as `p_viewer` sees it now (CONTRACT §8): lc_chat_json's fields and lc_chat_context's (listing, the
-- other's name, archived). What `POST /api/v1/chats` answers, and what chat_created and chat_updated carry when
-- they are written (for each participant). lc_chat_list builds the same shape inline, for a page of chats.
CREATE OR REPLACE FUNCTION lc_chat_view(c chats, p_viewer bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT lc_chat_json(c) || lc_chat_context(c, p_viewer)
$$;
