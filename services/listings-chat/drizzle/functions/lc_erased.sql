-- Whether nothing of the person may be stored again (CONTRACT §12): their erasure is under way, or it completed and
-- the suspension it made (reason `erased`) still stands. Reports and blocks, which a suspension alone does not
-- refuse, ask this; a platform that lifts that suspension lets the account write, report and block again.
CREATE OR REPLACE FUNCTION lc_erased(p_user_id bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT FROM erasures e WHERE e.user_id = p_user_id AND e.completed_at IS NULL)
      OR EXISTS (SELECT FROM suspensions s WHERE s.user_id = p_user_id AND s.reason = 'erased'
                   AND (s.until IS NULL OR s.until > now()))
$$;
