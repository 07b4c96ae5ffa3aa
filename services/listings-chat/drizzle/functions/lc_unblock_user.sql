-- migrate: after lc_webhooks_on, lc_append_user_event, lc_pair_key
-- `p_blocker` lifts their block of `p_blocked`. Status: unblocked (with `user_unblocked` in the blocker's
-- stream, its event_id returned, and its webhook (0027: while lc_webhooks_on())), unchanged (there was no such block).
CREATE OR REPLACE FUNCTION lc_unblock_user(p_blocker bigint, p_blocked bigint)
RETURNS TABLE (status text, event_id bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM pg_advisory_xact_lock(1010, lc_pair_key(p_blocker, p_blocked));
  DELETE FROM blocks bl WHERE bl.blocker_id = p_blocker AND bl.blocked_id = p_blocked;
  IF NOT FOUND THEN
    status := 'unchanged'; RETURN NEXT; RETURN;
  END IF;
  IF lc_webhooks_on() THEN
    INSERT INTO webhook_deliveries (type, data)
    VALUES ('user.unblocked', jsonb_build_object('blocker_id', p_blocker, 'blocked_id', p_blocked));
  END IF;
  status := 'unblocked';
  event_id := lc_append_user_event(p_blocker, 'user_unblocked', jsonb_build_object('user_id', p_blocked));
  RETURN NEXT;
END
$$;
