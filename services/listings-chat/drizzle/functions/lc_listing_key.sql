-- The advisory lock of a listing, in a class of two-int keys of its own (1011; 1010 is the pairs'). Opens on a
-- listing take it shared, so they go on side by side; a PUT of the listing takes it exclusive, so it waits for
-- opens under way to commit and the opens after it read what it stored: no chat is opened on a listing after
-- its removal committed, nor with another seller than the one the PUT checked. A collision only makes two
-- listings wait for each other.
CREATE OR REPLACE FUNCTION lc_listing_key(p_listing_id bigint) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
  SELECT hashint8(p_listing_id)
$$;
