import type { SQL } from "drizzle-orm";
import type { Database } from "./client.ts";
import { ensureEventPartitions, outOfEventPartitions } from "./event-partitions.ts";

/** The SQLSTATE of a failed query; drizzle wraps the driver's error, which carries it. */
export function sqlStateOf(error: unknown): string | undefined {
  for (let e = error; e && typeof e === "object"; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

/**
 * A serialization failure (40001) or a deadlock (40P01): PostgreSQL rolled the transaction back because of
 * another one, and the same work run again is likely to pass.
 */
export function lostToAConcurrentWrite(error: unknown): boolean {
  const code = sqlStateOf(error);
  return code === "40001" || code === "40P01";
}

/**
 * A lock not granted in time (55P03) or a statement cancelled by its timeout (57014): the database is busy.
 * Running the work again at once, let alone split into many calls, only adds to what it is waiting for.
 */
export function timedOut(error: unknown): boolean {
  const code = sqlStateOf(error);
  return code === "55P03" || code === "57014";
}

export interface RetryOptions {
  /** The wait before the retry is drawn between these two, so that the two sides of a deadlock part. */
  minDelayMs: number;
  maxDelayMs: number;
  random: () => number;
  sleep: (ms: number) => Promise<void>;
}

export const defaultRetry: RetryOptions = {
  minDelayMs: 5,
  maxDelayMs: 50,
  random: Math.random,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

/**
 * Runs `work`, and once more after a short random wait when it lost to a concurrent write (40001, 40P01).
 * Only for work that is one transaction: PostgreSQL rolled all of it back, so running it again stores
 * nothing twice. Anything else (a time-out, a lost connection, a bad value) fails at once.
 */
export async function retryingOnce<T>(work: () => Promise<T>, options: RetryOptions = defaultRetry): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (!lostToAConcurrentWrite(error)) throw error;
    const { minDelayMs, maxDelayMs, random, sleep } = options;
    await sleep(minDelayMs + random() * (maxDelayMs - minDelayMs));
    return work();
  }
}

/**
 * One write statement (a call of an `lc_*` write function, its own transaction), retried once when it lost to
 * a concurrent write: how every write of the service reaches the database. A write whose events found no
 * partition (the ids outran the partitions made ahead of them: the maintenance did not run) makes the missing
 * partitions and runs once more: it was rolled back whole.
 */
export async function executeWrite(db: Database, query: SQL, options?: RetryOptions) {
  // db.execute builds a lazy query: each attempt sends it anew.
  const write = () => retryingOnce(async () => await db.execute(query), options);
  try {
    return await write();
  } catch (error) {
    if (!outOfEventPartitions(error)) throw error;
    await ensureEventPartitions(db);
    return write();
  }
}
