-- One batch of the users' streams MESSAGE_RETENTION_DAYS trims (CONTRACT §12; personal-data/retention.ts): for the
-- next `p_users` users by id after `p_after_user` (user_streams' key), the rows of their stream whose event is
-- below `p_bound` (lc_retention_events_step's bound: every chat_events row below it is gone). user_events has only
-- its key, (user_id, event_id, chat_event_id), and no index is added for this (each would cost every write): a
-- user's oldest events come first in it, so what goes is read from the start of their stream, a page at a time.
-- Their event ids stay as they are: a cursor from before the retention reads from the first event kept, and the
-- stream's end (user_streams) does not move.
-- A stream is in commit order and event ids are taken in another (nextval before the stream's row lock), so a few
-- rows below the bound may follow the first one kept: a write that took its id before that row's and appended
-- after it, while it was in flight. Each event appended meanwhile took the next event id of the stream, so such a
-- row is at most as many event ids past the first kept as events were appended to that one stream while one
-- write was in flight (statements time out after 10 s): c_margin, 1,000 (100 events a second into one stream for
-- 10 s). After the prefix, only the event ids up to c_margin past the first row kept are looked at, in one range of
-- the key (the bound is one of its columns: only a row below it is fetched); never the rest of the stream. And a
-- first row c_far ids above the bound ends the user at once: a row below the bound after it would be a write that
-- took its id and committed while a million others were taken. A row either rule leaves would be left out of every
-- read all the same (lc_stream_page joins chat_events, where its event is gone): 24 bytes, no content.
-- So a user with nothing below the bound costs the probe of their first row, and, when it is within c_far ids of
-- the bound, one range of at most c_margin entries of their key (a few index pages); one with no events, nothing.
-- Stops after about `p_rows` rows read (entries of the key looked at, so also removed), before the user it was at:
-- `last_user` is where the next batch starts, and `done` says the last user was reached. A transaction reads at
-- most about p_rows + c_margin + c_page entries, however long the streams. Locks only the rows it deletes, which no
-- writer touches.
CREATE OR REPLACE FUNCTION lc_retention_streams_step(p_bound bigint, p_after_user bigint, p_users integer, p_rows integer)
RETURNS TABLE (removed integer, last_user bigint, done boolean) LANGUAGE plpgsql
-- The order comes from the key of each partition, merged (as lc_stream_page reads the streams).
SET enable_sort = off
AS $$
#variable_conflict use_column
DECLARE
  c_far constant bigint := 1000000;
  c_margin constant bigint := 1000;
  c_page constant integer := 500;
  v_user bigint;
  v_end bigint;
  v_seen integer := 0;
  v_read bigint := 0;
  v_first bigint;
  v_first_ce bigint;
  v_kept bigint;
  v_from bigint;
  v_page integer;
  v_last bigint;
  v_ids bigint[];
  v_n integer;
BEGIN
  removed := 0; last_user := p_after_user; done := false;
  FOR v_user, v_end IN
    SELECT s.user_id, s.last_event_id FROM user_streams s WHERE s.user_id > p_after_user ORDER BY s.user_id LIMIT p_users
  LOOP
    v_seen := v_seen + 1;
    SELECT ue.event_id, ue.chat_event_id INTO v_first, v_first_ce
    FROM user_events ue WHERE ue.user_id = v_user ORDER BY ue.event_id LIMIT 1;
    IF v_first IS NOT NULL THEN
      v_read := v_read + 1;
    END IF;
    IF v_first_ce < p_bound + c_far THEN
      v_from := v_first;
      v_kept := CASE WHEN v_first_ce >= p_bound THEN v_first END;
      IF v_kept IS NULL THEN
        -- The prefix below the bound, a page at a time, up to the page with the first row kept (whose rows below
        -- the bound go too) or the stream's end.
        v_from := v_first - 1;
        LOOP
          SELECT count(*), max(pg.event_id), min(pg.event_id) FILTER (WHERE pg.chat_event_id >= p_bound),
            array_agg(pg.event_id) FILTER (WHERE pg.chat_event_id < p_bound)
          INTO v_page, v_last, v_kept, v_ids
          FROM (SELECT ue.event_id, ue.chat_event_id FROM user_events ue
                WHERE ue.user_id = v_user AND ue.event_id > v_from ORDER BY ue.event_id LIMIT c_page) pg;
          v_read := v_read + v_page;
          IF v_ids IS NOT NULL THEN
            DELETE FROM user_events ue
            WHERE ue.user_id = v_user AND ue.event_id = ANY(v_ids) AND ue.chat_event_id < p_bound;
            GET DIAGNOSTICS v_n = ROW_COUNT;
            removed := removed + v_n;
          END IF;
          EXIT WHEN v_kept IS NOT NULL OR v_page < c_page;
          v_from := v_last;
          -- Enough for one transaction (this page was all below the bound, so it removed some): this user is taken
          -- up again by the next batch, from their first row left.
          IF removed >= p_rows OR v_read >= p_rows THEN
            RETURN NEXT; RETURN;
          END IF;
        END LOOP;
        v_from := v_last;
      END IF;
      -- The margin after the first row kept, past what was read already: one range of the key, which fetches only
      -- the rows below the bound.
      IF v_kept IS NOT NULL AND v_from < least(v_kept + c_margin, v_end) THEN
        DELETE FROM user_events ue
        WHERE ue.user_id = v_user AND ue.event_id > v_from AND ue.event_id <= least(v_kept + c_margin, v_end)
          AND ue.chat_event_id < p_bound;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        removed := removed + v_n;
        -- At most as many entries as event ids in the range.
        v_read := v_read + least(v_kept + c_margin, v_end) - v_from;
      END IF;
    END IF;
    last_user := v_user;
    IF removed >= p_rows OR v_read >= p_rows THEN
      RETURN NEXT; RETURN;
    END IF;
  END LOOP;
  done := v_seen < p_users;
  RETURN NEXT;
END
$$;
