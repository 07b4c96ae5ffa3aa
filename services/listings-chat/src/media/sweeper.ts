import { sql } from "drizzle-orm";
import type { Logger } from "pino";
import type { Database } from "../db/client.ts";
import { rowsOf } from "../events/log.ts";
import { allObjectKeys, objectKeys, type Storage } from "./storage.ts";

export interface PhotoSweeperOptions {
  db: Database;
  storage: Storage;
  log: Logger;
  /** How often due uploads are looked for (they are due 24 h after an upload, or when their message is deleted). */
  intervalMs?: number;
  /**
   * How long after its grant an upload's presigned PUT may still land (its lifetime and `PUT_WINDOW_MARGIN_S`):
   * the row of an upload swept sooner is kept until then, and its objects are removed again at that time.
   */
  putWindowS: number;
  /** Uploads removed per round trip. */
  batchSize?: number;
}

/** How long a sweep holds the rows it took: another instance takes them after this if it stopped half-way. */
const CLAIM = "10 minutes";
/** Rounds per sweep at most: a backlog is worked off over several sweeps, never in one unbounded loop. */
const MAX_ROUNDS = 50;

/**
 * Removes from the storage the objects of uploads that are due (never attached within 24 h, or whose message
 * was deleted: CONTRACT §11), then their rows. Each round takes its rows with `SKIP LOCKED` and holds them
 * for a while by moving their `sweep_after`, so that any number of instances sweep without doing one
 * row twice, and a sweep that died half-way is taken up again; objects are removed before the rows, so that
 * no object outlives the row that names it. The original of a photo sent (and removed) within its presigned
 * PUT's lifetime can be PUT again by whoever holds the URL: a due row is then swept twice, now and once the URL
 * can no longer be used, and only then removed; and the original of a photo still in its message is removed
 * once more at that time (`original_recheck_at`, set as it was processed).
 */
export function createPhotoSweeper({
  db,
  storage,
  log,
  putWindowS,
  intervalMs = 30_000,
  batchSize = 100,
}: PhotoSweeperOptions) {
  let timer: NodeJS.Timeout | undefined;
  let dueAt = Number.POSITIVE_INFINITY;
  let running: Promise<number> | undefined;
  let stopped = false;

  /**
   * Takes up to a batch of the uploads whose `due` time (sweep_after or original_recheck_at) has come, and holds
   * them by moving it `CLAIM` ahead: another instance skips them (SKIP LOCKED), or takes them up after that.
   */
  async function claim(due: "sweep_after" | "original_recheck_at"): Promise<{ id: string; putWindowOver: boolean }[]> {
    const column = sql.identifier(due);
    // Whether a PUT could still land, decided as the rows are taken: before their objects are removed.
    return rowsOf<{ id: string; put_window_over: boolean }>(
      await db.execute(sql`
        UPDATE uploads u SET ${column} = now() + ${CLAIM}::interval
        WHERE u.id IN (SELECT d.id FROM uploads d WHERE d.${column} <= now()
                       ORDER BY d.${column} LIMIT ${batchSize} FOR UPDATE SKIP LOCKED)
        RETURNING u.id, u.created_at + make_interval(secs => ${putWindowS}) <= now() AS put_window_over`),
    ).map((row) => ({ id: row.id, putWindowOver: row.put_window_over }));
  }

  /** Removes the objects of due uploads, then their rows (or keeps a row for its second sweep). */
  async function round(): Promise<number> {
    const claimed = await claim("sweep_after");
    if (claimed.length === 0) return 0;
    await storage.remove(claimed.flatMap((row) => allObjectKeys(row.id)));
    // `sweep_after` still set: a row attached meanwhile is not removed. None can be: an unsent upload is due
    // 25 h after it was made, an hour after sends stop taking it (24 h, and sends refuse a due or claimed one),
    // and a deleted message's are never taken again. A row whose PUT could still land when it was taken is
    // due again once it no longer can (its second sweep).
    const final = claimed.filter((row) => row.putWindowOver).map((row) => row.id);
    const again = claimed.filter((row) => !row.putWindowOver).map((row) => row.id);
    if (again.length > 0) {
      await db.execute(sql`
        UPDATE uploads SET sweep_after = greatest(now(), created_at + make_interval(secs => ${putWindowS}))
        WHERE id = ANY(${sql.param(again)}::text[]) AND sweep_after IS NOT NULL`);
    }
    if (final.length > 0) {
      await db.execute(
        sql`DELETE FROM uploads WHERE id = ANY(${sql.param(final)}::text[]) AND sweep_after IS NOT NULL`,
      );
    }
    return claimed.length;
  }

  /** Removes the originals due to be removed once more (their upload URL ran out). */
  async function recheckRound(): Promise<number> {
    const ids = (await claim("original_recheck_at")).map((row) => row.id);
    if (ids.length === 0) return 0;
    await storage.remove(ids.map((id) => objectKeys(id).original));
    await db.execute(sql`UPDATE uploads SET original_recheck_at = NULL WHERE id = ANY(${sql.param(ids)}::text[])`);
    return ids.length;
  }

  /** Rounds of `take` until one finds fewer than a batch, `MAX_ROUNDS` at most; how many it took in all. */
  async function rounds(take: () => Promise<number>): Promise<number> {
    let taken = 0;
    for (let i = 0; i < MAX_ROUNDS; i += 1) {
      const n = await take();
      taken += n;
      if (n < batchSize) break;
    }
    return taken;
  }

  /** One sweep: the due uploads (their number is the result), then the originals to remove once more. */
  async function sweep(): Promise<number> {
    const removed = await rounds(round);
    const originals = await rounds(recheckRound);
    if (originals > 0) log.debug({ originals }, "removed sent photos' originals once more, their upload URLs run out");
    return removed;
  }

  /** The next sweep in `ms`, unless one is due sooner already. */
  const schedule = (ms: number) => {
    if (stopped || Date.now() + ms >= dueAt) return;
    clearTimeout(timer);
    dueAt = Date.now() + ms;
    timer = setTimeout(() => {
      dueAt = Number.POSITIVE_INFINITY;
      void sweepNow().catch(() => {});
    }, ms);
    timer.unref();
  };

  /** Sweeps that failed in a row: the first is a warning, the others only debug lines, until one succeeds. */
  let failedInARow = 0;

  /** Sweeps now (or joins the sweep running); the next one follows `intervalMs` after. */
  function sweepNow(): Promise<number> {
    running ??= sweep()
      .then((removed) => {
        if (failedInARow > 0) log.info({ failed_sweeps: failedInARow }, "photo sweeps succeed again");
        failedInARow = 0;
        return removed;
      })
      .catch((error: unknown) => {
        failedInARow += 1;
        // A storage that is down fails every sweep (one a second after each delete): one warning says so.
        if (failedInARow === 1) {
          log.warn(
            { err: error },
            "could not remove due photos from the storage: sweeps go on, and a line says when they succeed again",
          );
        } else {
          log.debug({ err: error, failed_sweeps: failedInARow }, "a photo sweep failed again");
        }
        throw error;
      })
      .finally(() => {
        running = undefined;
        schedule(intervalMs);
      });
    return running;
  }

  return {
    start() {
      schedule(intervalMs);
    },
    sweepNow,
    /** A message with photos was deleted: its objects go within a second, not at the next interval. */
    soon() {
      if (!running) schedule(1_000);
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running?.catch(() => {});
    },
  };
}

export type PhotoSweeper = ReturnType<typeof createPhotoSweeper>;
