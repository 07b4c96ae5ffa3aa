-- migrate: after lc_erased, lc_webhooks_on, lc_append_user_event, lc_pair_key
-- `p_blocker` blocks `p_blocked`. Status: blocked (new: the block, its webhook (0027: while lc_webhooks_on()), and `user_blocked` in the
-- blocker's stream, whose event_id is returned), unchanged (blocked already), too_many (the blocker blocks
-- `p_max` users already), erased (the blocker is being erased, or was and is still suspended: lc_erased, CONTRACT §12). Under the pair's lock taken exclusive (lc_pair_key), so two calls for one pair,
-- in either direction, run one after the other.
CREATE OR REPLACE FUNCTION lc_block_user(p_blocker bigint, p_blocked bigint, p_max integer)
RETURNS TABLE (status text, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  IF lc_erased(p_blocker) THEN
    status := 'erased'; RETURN NEXT; RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock(1010, lc_pair_key(p_blocker, p_blocked));
  PERFORM FROM blocks bl WHERE bl.blocker_id = p_blocker AND bl.blocked_id = p_blocked;
  IF FOUND THEN
    status := 'unchanged'; RETURN NEXT; RETURN;
  END IF;
  IF (SELECT count(*) FROM (SELECT FROM blocks bl WHERE bl.blocker_id = p_blocker LIMIT p_max) AS mine) >= p_max THEN
    status := 'too_many'; RETURN NEXT; RETURN;
  END IF;
  INSERT INTO blocks (blocker_id, blocked_id) VALUES (p_blocker, p_blocked);
  IF lc_webhooks_on() THEN
    INSERT INTO webhook_deliveries (type, data)
    VALUES ('user.blocked', jsonb_build_object('blocker_id', p_blocker, 'blocked_id', p_blocked));
  END IF;
  status := 'blocked';
  event_id := lc_append_user_event(p_blocker, 'user_blocked', jsonb_build_object('user_id', p_blocked));
  RETURN NEXT;
END
$$;
