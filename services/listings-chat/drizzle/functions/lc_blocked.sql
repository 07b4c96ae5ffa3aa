-- Whether either of the two blocks the other: two probes of the blocks' key.
CREATE OR REPLACE FUNCTION lc_blocked(a bigint, b bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT FROM blocks bl WHERE bl.blocker_id = a AND bl.blocked_id = b)
    OR EXISTS (SELECT FROM blocks bl WHERE bl.blocker_id = b AND bl.blocked_id = a)
$$;
