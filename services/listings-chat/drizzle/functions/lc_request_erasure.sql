-- Records the erasure of a person (CONTRACT §12, `DELETE /internal/chat/users/:id`) and suspends them until lifted,
-- in one transaction: from its commit their sends, edits and chat opens are refused (lc_suspended), so nothing of
-- theirs is written behind the erasure's back, and the caller closes their sockets. Idempotent: an erasure under
-- way is left as it is; one completed is started again (anything stored since is erased too, and `user.erased`
-- is sent again). The suspension's reason says why, replacing the platform's own (a text about the person).
-- Returns whether the erasure is under way from this call on (`false`: it already was).
CREATE OR REPLACE FUNCTION lc_request_erasure(p_user_id bigint) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  v_started boolean;
BEGIN
  INSERT INTO erasures AS e (user_id) VALUES (p_user_id)
  ON CONFLICT (user_id) DO UPDATE SET step = 'start', cursor = 0, listed_at = NULL, completed_at = NULL,
    requested_at = now()
  WHERE e.completed_at IS NOT NULL
  RETURNING true INTO v_started;
  INSERT INTO suspensions AS s (user_id, until, reason) VALUES (p_user_id, NULL, 'erased')
  ON CONFLICT (user_id) DO UPDATE SET until = NULL, reason = 'erased'
  WHERE s.until IS NOT NULL OR s.reason IS DISTINCT FROM 'erased';
  RETURN coalesce(v_started, false);
END
$$;
