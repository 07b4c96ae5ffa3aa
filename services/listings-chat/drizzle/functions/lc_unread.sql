-- `GET /api/v1/chats/unread`: the user's total (kept on their stream row) and the counts of their `p_limit`
-- most recently active chats with something unread (a range scan of the partial index
-- chat_participants_user_unread_idx), as {"total": 3, "chats": {"12": 2, "15": 1}}.
CREATE OR REPLACE FUNCTION lc_unread(p_user_id bigint, p_limit integer) RETURNS text LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN json_build_object(
    'total', coalesce((SELECT s.unread_total FROM user_streams s WHERE s.user_id = p_user_id), 0),
    'chats', coalesce((
      SELECT json_object_agg(u.chat_id, u.unread_count)
      FROM (
        SELECT p.chat_id, p.unread_count FROM chat_participants p
        WHERE p.user_id = p_user_id AND p.unread_count > 0
        ORDER BY p.last_activity_at DESC, p.chat_id DESC
        LIMIT p_limit
      ) u
    ), '{}'::json)
  )::text;
END
$$;
