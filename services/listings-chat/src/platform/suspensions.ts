import { sql } from "drizzle-orm";
import type { Logger } from "pino";
import type { Database } from "../db/client.ts";
import { executeWrite } from "../db/retry.ts";
import { suspensions } from "../db/schema.ts";

/**
 * Suspends user `userId` (CONTRACT §8) until `until` (null: until lifted), replacing a suspension in force.
 * The write functions refuse the user's sends, edits and chat opens from its commit on (lc_suspended).
 */
export async function suspendUser(db: Database, userId: number, until: Date | null, reason: string | null) {
  await executeWrite(
    db,
    sql`insert into ${suspensions} (user_id, until, reason) values (${userId}, ${until?.toISOString() ?? null}, ${reason})
        on conflict (user_id) do update set until = excluded.until, reason = excluded.reason, created_at = now()`,
  );
}

/** Lifts the user's suspension; nothing to lift is not an error. */
export async function liftSuspension(db: Database, userId: number) {
  await executeWrite(db, sql`delete from ${suspensions} where user_id = ${userId}`);
}

/** How often an instance reads the suspensions in force again: the longest a suspension or a lift heard by
 * no bus message takes to reach its connects (writes are refused by the write functions at once). */
export const SUSPENSIONS_REFRESH_MS = 5_000;

export interface SuspensionWatchOptions {
  db: Database;
  log: Logger;
  /** A user suspended now: their sockets here are to close (called again for each at every refresh). */
  onSuspended: (userId: number) => void;
  refreshMs?: number;
}

export type SuspensionWatch = ReturnType<typeof createSuspensionWatch>;

/**
 * The suspensions in force (CONTRACT §8), kept in memory by each instance, so that a connect asks no query:
 * read at start and every `refreshMs`, and changed at once by what this instance stores and what the bus says of
 * the others' (`changed`). A marketplace suspends few people: the whole set is one small read. At each read the
 * sockets of every suspended user here are closed too, so a socket opened before its suspension was heard lives
 * `refreshMs` at most.
 */
export function createSuspensionWatch({
  db,
  log,
  onSuspended,
  refreshMs = SUSPENSIONS_REFRESH_MS,
}: SuspensionWatchOptions) {
  /** User → end of the suspension in epoch ms, null: until lifted. */
  let inForce = new Map<number, number | null>();
  let timer: NodeJS.Timeout | undefined;

  async function refresh() {
    const rows = await db
      .select({ userId: suspensions.userId, until: suspensions.until })
      .from(suspensions)
      .where(sql`lc_suspended(${suspensions.userId})`);
    inForce = new Map(rows.map((row) => [row.userId, row.until?.getTime() ?? null]));
    for (const userId of inForce.keys()) onSuspended(userId);
  }

  const isSuspended = (userId: number): boolean => {
    const until = inForce.get(userId);
    return until !== undefined && (until === null || until > Date.now());
  };

  return {
    isSuspended,
    /**
     * For a connect: no one the set does not hold (no query: the connect path of everyone else); one it holds is
     * asked of the database, since a lift may have been stored where this instance did not hear it.
     */
    checkConnect(userId: number): boolean | Promise<boolean> {
      if (!isSuspended(userId)) return false;
      return suspendedNow(db, userId).then((suspended) => {
        if (!suspended) inForce.delete(userId);
        return suspended;
      });
    },
    /** A suspension stored (`until`: its end in epoch ms, or null) or lifted (`"lifted"`), here or elsewhere. */
    changed(userId: number, until: number | null | "lifted") {
      if (until === "lifted") inForce.delete(userId);
      else inForce.set(userId, until);
      if (isSuspended(userId)) onSuspended(userId);
    },
    /** Reads the suspensions in force now, then again every `refreshMs`. */
    async start() {
      await refresh();
      timer = setInterval(() => {
        refresh().catch((error: unknown) => log.warn({ err: error }, "could not read the suspensions in force"));
      }, refreshMs);
      timer.unref();
    },
    stop() {
      if (timer) clearInterval(timer);
    },
  };
}

/** Whether a suspension of the user is in force now, as the write functions decide it (lc_suspended). */
async function suspendedNow(db: Database, userId: number): Promise<boolean> {
  const rows = await db
    .select({ userId: suspensions.userId })
    .from(suspensions)
    .where(sql`${suspensions.userId} = ${userId} and lc_suspended(${suspensions.userId})`);
  return rows.length > 0;
}
