-- One batch of the users' streams MESSAGE_RETENTION_DAYS trims (CONTRACT §12; personal-data/retention.ts): for the
-- next `p_users` users by id after `p_after_user` (user_streams' key), the rows of their stream whose event is
-- below `p_bound` (lc_retention_events_step's bound: every chat_events row below it is gone). user_events has only
-- its key, (user_id, event_id, chat_event_id), and no index is added for this (each would cost every write): a
-- user's oldest events come first in it, so what goes is read from the start of their stream, a page at a time.
-- Their event ids stay as they are: a cursor from before the retention reads from the first event kept, and the
-- stream's end (user_streams) does not move.
-- A stream is in commit order and event ids are taken in another (nextval before the stream's row lock), so a few
-- rows below the bound may follow one above it: the pages go on while their last row is within c_margin ids of the
-- bound, and every row below it in them goes. A row more than c_margin ids below one before it would be a write
-- that took its id and committed while a million others were taken (statements time out after 10 s).
-- The first row of each user's stream is looked at first: when it is above the bound by the margin, nothing of
-- theirs is old (one key probe per user, the common case); when they have no events, nothing is read.
-- Stops after about `p_rows` rows removed, before the user it was at: `last_user` is where the next batch starts,
-- and `done` says the last user was reached. Locks only the rows it deletes, which no writer touches.
CREATE OR REPLACE FUNCTION lc_retention_streams_step(p_bound bigint, p_after_user bigint, p_users integer, p_rows integer)
RETURNS TABLE (removed integer, last_user bigint, done boolean) LANGUAGE plpgsql
-- The order comes from the key of each partition, merged (as lc_stream_page reads the streams).
SET enable_sort = off
AS $$
#variable_conflict use_column
DECLARE
  c_margin constant bigint := 1000000;
  c_page constant integer := 500;
  v_user bigint;
  v_seen integer := 0;
  v_first_ce bigint;
  v_from bigint;
  v_page integer;
  v_last bigint;
  v_last_ce bigint;
  v_ids bigint[];
  v_n integer;
BEGIN
  removed := 0; last_user := p_after_user; done := false;
  FOR v_user IN SELECT s.user_id FROM user_streams s WHERE s.user_id > p_after_user ORDER BY s.user_id LIMIT p_users
  LOOP
    v_seen := v_seen + 1;
    SELECT ue.event_id - 1, ue.chat_event_id INTO v_from, v_first_ce
    FROM user_events ue WHERE ue.user_id = v_user ORDER BY ue.event_id LIMIT 1;
    IF FOUND AND v_first_ce < p_bound + c_margin THEN
      LOOP
        SELECT count(*), max(pg.event_id), (array_agg(pg.chat_event_id ORDER BY pg.event_id DESC))[1],
          array_agg(pg.event_id) FILTER (WHERE pg.chat_event_id < p_bound)
        INTO v_page, v_last, v_last_ce, v_ids
        FROM (SELECT ue.event_id, ue.chat_event_id FROM user_events ue
              WHERE ue.user_id = v_user AND ue.event_id > v_from ORDER BY ue.event_id LIMIT c_page) pg;
        IF v_ids IS NOT NULL THEN
          DELETE FROM user_events ue
          WHERE ue.user_id = v_user AND ue.event_id = ANY(v_ids) AND ue.chat_event_id < p_bound;
          GET DIAGNOSTICS v_n = ROW_COUNT;
          removed := removed + v_n;
        END IF;
        EXIT WHEN v_page < c_page OR v_last_ce >= p_bound + c_margin;
        v_from := v_last;
        -- Enough for one transaction: this user is taken up again by the next batch, from their first row left.
        IF removed >= p_rows THEN
          RETURN NEXT; RETURN;
        END IF;
      END LOOP;
    END IF;
    last_user := v_user;
    IF removed >= p_rows THEN
      RETURN NEXT; RETURN;
    END IF;
  END LOOP;
  done := v_seen < p_users;
  RETURN NEXT;
END
$$;
