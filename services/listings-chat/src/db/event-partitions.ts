/**
 * The partitions of the event tables (migration 0021: `chat_events` by id, `user_events` by chat_event_id, the
 * same bounds for both). lc_ensure_event_partitions adds them ahead of the ids in use; each instance calls it
 * when it opens the database and every few minutes after, and a write that finds no partition for its events
 * calls it before its one retry, so that events are never refused for want of one.
 */
import { sql } from "drizzle-orm";
import type { Database } from "./client.ts";
import { sqlStateOf } from "./retry.ts";

/** How often a running instance makes sure partitions are there ahead of the ids in use. */
export const EVENT_PARTITION_CHECK_MS = 5 * 60_000;

/** Adds what partitions are missing ahead of the newest event id; returns how many it added. */
export async function ensureEventPartitions(db: Database): Promise<number> {
  // node-postgres and PGlite both answer `{ rows }`.
  const result = (await db.execute(sql`select lc_ensure_event_partitions() as added`)) as { rows: unknown[] };
  return Number((result.rows[0] as { added: number | string }).added);
}

/**
 * An insert of events above the newest partition: PostgreSQL refuses the row (23514) and stores nothing. Told
 * by the error's fields, not its message (translated under another lc_messages): the partitioned table, and no
 * constraint (a CHECK violation names one, e.g. 0015's bound before 0021, which no partition added can cure).
 */
export function outOfEventPartitions(error: unknown): boolean {
  if (sqlStateOf(error) !== "23514") return false;
  for (let e = error; e && typeof e === "object"; e = (e as { cause?: unknown }).cause) {
    const { table, constraint } = e as { table?: unknown; constraint?: unknown };
    if (table === "chat_events" || table === "user_events") return constraint === undefined;
  }
  return false;
}

/**
 * Calls ensureEventPartitions every `intervalMs` until the returned function is called. A failure is reported
 * and the next run tries again (the writes' own fallback covers the meantime).
 */
export function maintainEventPartitions(
  db: Database,
  onError: (error: unknown) => void,
  intervalMs = EVENT_PARTITION_CHECK_MS,
): () => void {
  const timer = setInterval(() => {
    ensureEventPartitions(db).catch(onError);
  }, intervalMs);
  // Maintenance never keeps a stopping process alive.
  timer.unref();
  return () => clearInterval(timer);
}
