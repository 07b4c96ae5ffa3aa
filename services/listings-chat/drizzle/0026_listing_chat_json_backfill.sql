-- migrate: batches
-- `chat_json` (0023) of the listings registered before it, 1,000 at a time (lc_put_listing writes it from 0023
-- on). The shape of lc_chat_listing_json, written here because a versioned file runs before the function files.
-- Until a listing is filled, the chat list builds its JSON from its row.
WITH batch AS (SELECT id FROM listings WHERE chat_json IS NULL ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED)
UPDATE listings l SET chat_json = (
  SELECT row_to_json(v) FROM (
    SELECT l.id, l.title, l.price_minor, l.currency, l.image_url, l.url, l.status
  ) v)
FROM batch WHERE l.id = batch.id RETURNING 1;
