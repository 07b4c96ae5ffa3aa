-- migrate: after lc_suspended
-- Whether nothing of the person may be stored again (CONTRACT §12): their erasure is under way, or it completed and
-- they are still suspended (by the erasure, or by the platform since, whatever its reason). Reports and blocks,
-- which a suspension alone does not refuse, ask this; a platform that lifts the suspension lets the account write,
-- report and block again.
CREATE OR REPLACE FUNCTION lc_erased(p_user_id bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT FROM erasures e WHERE e.user_id = p_user_id
                   AND (e.completed_at IS NULL OR lc_suspended(p_user_id)))
$$;
