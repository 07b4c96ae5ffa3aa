-- The advisory lock of a pair of users (either order), in a class of two-int keys of its own (1010), apart
-- from the migrations' bigint key. Sends, edits and opens between two users take it shared, so they go on
-- side by side; a block or an unblock takes it exclusive, so it waits for those already under way to commit,
-- and those after it read the block (PL/pgSQL reads with a new snapshot at each statement). So nothing that
-- checked the pair before a block commits after it: in the blocker's stream, `user_blocked` comes after
-- every message of the other's that got through. A hash collision only makes two pairs wait for each other.
CREATE OR REPLACE FUNCTION lc_pair_key(a bigint, b bigint) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT hashtext(least(a, b)::text || ':' || greatest(a, b)::text)
$$;
