-- Whether the platform suspended the user and the suspension is in force (CONTRACT §8): a row with no end, or
-- an end ahead. One probe of the key of a small table, made by every send, edit and open of a chat.
CREATE OR REPLACE FUNCTION lc_suspended(p_user_id bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT FROM suspensions s WHERE s.user_id = p_user_id AND (s.until IS NULL OR s.until > now()))
$$;
