import { desc, eq, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { executeWrite } from "../db/retry.ts";
import { blocks } from "../db/schema.ts";
import { type AddressedEvent, addressedEvents, rowsOf } from "../events/log.ts";

/**
 * How many users one user may block at once: enough for anyone, and a bound on what one account can make
 * the database keep and on the length of `GET /api/v1/blocks`.
 */
export const MAX_BLOCKS_PER_USER = 1_000;

/** What became of a block or an unblock (see `lc_block_user`, `lc_unblock_user`). */
export type BlockChange =
  /** Stored, with `user_blocked` / `user_unblocked` for the blocker's own stream. */
  | { status: "changed"; events: AddressedEvent[] }
  /** Blocked already, or not blocked: nothing stored, nothing to tell. */
  | { status: "unchanged" }
  /** The blocker blocks `MAX_BLOCKS_PER_USER` users already. */
  | { status: "too_many" }
  /** The blocker is being erased, or was (CONTRACT §12): nothing of theirs is stored again. */
  | { status: "erased" };

interface BlockRow {
  status: "blocked" | "unblocked" | "unchanged" | "too_many" | "erased";
  event_id: string | number | null;
}

function blockChange(rows: BlockRow[], blockerId: number, type: "user_blocked" | "user_unblocked", userId: number) {
  const first = rows[0];
  if (!first) throw new Error(`the ${type} function returned no row`);
  if (first.status === "unchanged" || first.status === "too_many" || first.status === "erased")
    return { status: first.status } as BlockChange;
  return {
    status: "changed",
    events: addressedEvents([{ user_id: blockerId, event_id: first.event_id }], { type, user_id: userId }),
  } as BlockChange;
}

/**
 * `blockerId` blocks `blockedId`: from the commit on, neither can send to the other, edit a message in their
 * chats or open a chat with the other; whatever between them was under way has committed before.
 */
export async function blockUser(
  db: Database,
  blockerId: number,
  blockedId: number,
  max = MAX_BLOCKS_PER_USER,
): Promise<BlockChange> {
  const rows = rowsOf<BlockRow>(
    await executeWrite(db, sql`select * from lc_block_user(${blockerId}, ${blockedId}, ${max})`),
  );
  return blockChange(rows, blockerId, "user_blocked", blockedId);
}

/** `blockerId` no longer blocks `blockedId` (a block by `blockedId`, if any, stands). */
export async function unblockUser(db: Database, blockerId: number, blockedId: number): Promise<BlockChange> {
  const rows = rowsOf<BlockRow>(await executeWrite(db, sql`select * from lc_unblock_user(${blockerId}, ${blockedId})`));
  return blockChange(rows, blockerId, "user_unblocked", blockedId);
}

/** Whom `userId` blocks, the most recently blocked first (at most `MAX_BLOCKS_PER_USER`: a key range). */
export async function blocksOf(db: Database, userId: number): Promise<{ user_id: number; created_at: string }[]> {
  const rows = await db
    .select({ userId: blocks.blockedId, createdAt: blocks.createdAt })
    .from(blocks)
    .where(eq(blocks.blockerId, userId))
    .orderBy(desc(blocks.createdAt), desc(blocks.blockedId));
  return rows.map((row) => ({ user_id: row.userId, created_at: row.createdAt.toISOString() }));
}
