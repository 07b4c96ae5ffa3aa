-- Room on each page for the new versions of the rows every send updates, and vacuum that keeps up with them.
-- SET (...) takes a SHARE UPDATE EXCLUSIVE lock (reads and writes go on) and applies to pages written from now
-- on; nothing is rewritten.
--
-- - user_streams: both participants' rows, on every send (one version each since 0010), all HOT (no indexed
--   column changes). Half of each page free keeps the chain of a busy user's row on its page while an old
--   snapshot holds pruning back; the table has one small row per user.
-- - chats: one version per send, HOT (nothing indexed changes on a send).
-- - chat_participants: two versions per send, not HOT (`last_activity_at` is in the index of the chat list, which
--   must give "my chats by activity"), but with room on the page the new version stays next to the old one and
--   the chat's other participant.
-- - All three: vacuumed after 1–2 % of their rows are dead instead of PostgreSQL's 20 %, so the dead versions of
--   a busy seller's rows are cleared in minutes, not after a fifth of the table has churned.
-- - messages: index-only scans and the visibility map stay current on an insert-mostly table.
ALTER TABLE "user_streams" SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.05);--> statement-breakpoint
ALTER TABLE "chats" SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);--> statement-breakpoint
ALTER TABLE "chat_participants" SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);--> statement-breakpoint
ALTER TABLE "messages" SET (autovacuum_vacuum_insert_scale_factor = 0.05);
