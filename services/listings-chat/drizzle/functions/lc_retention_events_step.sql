-- One batch of the events MESSAGE_RETENTION_DAYS removes (CONTRACT §12; personal-data/retention.ts): the stream
-- is a log of the last days, so every event older than `p_cutoff` goes, whatever it is about. Of the next `p_batch`
-- chat_events rows by id after `p_after` (a range of the key, in order across partitions), those before the first
-- one created at or after the cutoff are deleted: ids are handed out in time order, so what is deleted is always a
-- prefix of the table, and `bound` (the last id deleted, plus one) says that every row below it is gone. The users'
-- streams lose their rows below it afterwards (lc_retention_streams_step); meanwhile a read of a stream skips them
-- (lc_stream_page joins the two). Exactly the rows read are deleted, never a range: a row of a write that had not
-- committed when they were read is a new event, and keeps its place.
-- Returns how many were removed, the bound (null when none was), the last id deleted (the next batch's `p_after`)
-- and `done`: the batch met a newer event or the end of the table. Locks only the rows it deletes, which no writer
-- touches (events are only ever inserted).
CREATE OR REPLACE FUNCTION lc_retention_events_step(p_cutoff timestamptz, p_after bigint, p_batch integer)
RETURNS TABLE (removed integer, bound bigint, last_id bigint, done boolean) LANGUAGE plpgsql
-- The order comes from the key of each partition, appended in order (as lc_stream_page reads the streams).
SET enable_sort = off
AS $$
#variable_conflict use_column
DECLARE
  v_seen integer;
  v_kept bigint;
  v_ids bigint[];
BEGIN
  SELECT count(*), min(e.id) FILTER (WHERE e.created_at >= p_cutoff),
    array_agg(e.id ORDER BY e.id) FILTER (WHERE e.created_at < p_cutoff)
  INTO v_seen, v_kept, v_ids
  FROM (SELECT ce.id, ce.created_at FROM chat_events ce WHERE ce.id > p_after ORDER BY ce.id LIMIT p_batch) e;
  -- The prefix only: an older row after a newer one (ids taken in one order, committed in another) waits for the
  -- next run, when it is below the first newer row.
  IF v_kept IS NOT NULL THEN
    -- In the array's order (ascending): no ORDER BY, which under enable_sort = off costs as much as JIT compiling it.
    v_ids := ARRAY(SELECT i FROM unnest(v_ids) AS i WHERE i < v_kept);
  END IF;
  done := v_kept IS NOT NULL OR v_seen < p_batch;
  removed := 0; bound := NULL; last_id := p_after;
  IF cardinality(v_ids) > 0 THEN
    DELETE FROM chat_events ce WHERE ce.id = ANY(v_ids) AND ce.created_at < p_cutoff;
    GET DIAGNOSTICS removed = ROW_COUNT;
    last_id := v_ids[cardinality(v_ids)];
    bound := last_id + 1;
  END IF;
  RETURN NEXT;
END
$$;
