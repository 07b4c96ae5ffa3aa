-- The other participant as chats show them (CONTRACT §8, `peer`), as compact json text: what putPerson stores in
-- `people.peer_json`, and what a chat shows of a person the platform never named (null names).
CREATE OR REPLACE FUNCTION lc_peer_text(p_user_id bigint, p_display_name text, p_avatar_url text) RETURNS json
LANGUAGE sql IMMUTABLE AS $$
  SELECT row_to_json(v) FROM (
    SELECT p_user_id AS id, p_display_name AS display_name, p_avatar_url AS avatar_url
  ) v
$$;
