import { and, eq, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { preparedPerDatabase } from "../db/prepared.ts";
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

/** Whether a suspension of the user is in force now (a key probe, prepared once per pool: every connect asks). */
export async function isSuspended(db: Database, userId: number): Promise<boolean> {
  const rows = await suspendedQuery(db).execute({ userId });
  return rows.length > 0;
}

// In force as the write functions decide it (lc_suspended): one definition of "in force".
const suspendedQuery = preparedPerDatabase((db) =>
  db
    .select({ userId: suspensions.userId })
    .from(suspensions)
    .where(and(eq(suspensions.userId, sql.placeholder("userId")), sql`lc_suspended(${suspensions.userId})`))
    .prepare("lc_is_suspended"),
);
