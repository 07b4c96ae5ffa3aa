-- migrate: after lc_message_json
-- The `data` of `message.created`, `message.updated` and `message.deleted` (CONTRACT §9): the message as it is
-- now (its `edited_at` and `deleted_at` tell a receiver which of two deliveries is newer), its chat's ids, and
-- the content rules' flags (§10), which users never see. lc_send_messages builds the same with the chat in hand.
--
-- PL/pgSQL: its plan is kept for the session (a SQL function with a subquery is planned at every call).
CREATE OR REPLACE FUNCTION lc_webhook_message_data(m messages) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN jsonb_build_object(
    'message', lc_message_json(m),
    'chat', (SELECT jsonb_build_object('id', c.id, 'listing_id', c.listing_id, 'buyer_id', c.buyer_id,
                                       'seller_id', c.seller_id)
             FROM chats c WHERE c.id = m.chat_id),
    'flags', to_jsonb(coalesce(m.flags, '{}')));
END
$$;
