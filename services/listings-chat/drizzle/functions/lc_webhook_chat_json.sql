-- migrate: after lc_chat_json, lc_chat_listing_json
-- A chat as webhooks carry it (CONTRACT §9, `chat.created`, `chat.updated`): §8's chat without what depends on
-- who looks at it (`peer`, `archived`): lc_chat_json's fields and the listing.
-- PL/pgSQL: its plan is kept for the session (a SQL function with a subquery is planned at every call).
CREATE OR REPLACE FUNCTION lc_webhook_chat_json(c chats) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN lc_chat_json(c)
    || jsonb_build_object('listing', (SELECT lc_chat_listing_json(l) FROM listings l WHERE l.id = c.listing_id));
END
$$;
