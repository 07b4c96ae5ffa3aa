import { sql } from "drizzle-orm";
import type { Logger } from "pino";
import type { Database } from "../db/client.ts";
import { rowsOf } from "../events/log.ts";

/**
 * Rows per query: a page of chats (with their views: a few key lookups each) or of messages, blocks, reports.
 * What the export holds at once is about one page's lines, whatever the size of the account.
 */
export const EXPORT_PAGE_ROWS = 500;

/**
 * Chat ids read per scan of the person's entries in chat_participants_user_activity_idx (see `chatIdsAfter`): ten
 * pages of chats, 40 KB of ids held, and a tenth of the scans a scan per page would make.
 */
export const EXPORT_CHAT_IDS_PER_SCAN = 5_000;

/** Bigints arrive as strings from node-postgres and as numbers from PGlite. */
type Id = string | number;

interface ChatRow {
  id: Id;
  chat: Record<string, unknown>;
  read_id: Id | null;
}

interface MessageRow {
  chat_id: Id;
  id: Id;
  message: Record<string, unknown>;
  stored_content: string | null;
}

interface BlockRow {
  blocked_id: Id;
  created_at: string;
}

interface ReportRow {
  id: Id;
  reason: string;
  note: string | null;
  target_type: string;
  target_id: Id;
  message: unknown;
  created_at: string;
}

/** Where the export is. Each step runs one query and says where the next one starts. */
type Step =
  | { kind: "chats" }
  | {
      kind: "messages";
      /** The chats of the page just written (ascending), and the (chat, message) written last. */
      chats: number[];
      afterChat: number;
      afterMessage: number;
    }
  | { kind: "blocks"; afterBlocked: number }
  | { kind: "reports"; afterType: string; afterTarget: number }
  | { kind: "done" };

const line = (type: string, object: Record<string, unknown>) => JSON.stringify({ type, ...object });

/**
 * A person's data (CONTRACT §12) as JSON lines: their chats as the API shows a chat to them (lc_chat_view), each
 * page of chats followed by their reads in those chats and the messages they sent there (lc_message_json, photo
 * paths in `attachments`; a deleted message whose text is still stored shows it as `stored_content`, since an
 * access request shows what we hold), then the blocks and the reports they made. A platform's message in their
 * chat is not theirs and is not exported.
 *
 * Each `pull()` runs a keyset-paginated query (two when the chat ids ahead run out) and enqueues its lines as one
 * chunk. Nothing is read ahead of the receiver (highWaterMark 0, and @hono/node-server asks for the next chunk
 * only once the socket took the last one), so a receiver that stops reading stops the queries, and one that goes
 * away cancels them. No cursor and no transaction outlive a query: each page is read as it is then, and every
 * cursor is a key that never moves (a chat id, a message id, a blocked id, a report's target), so what exists for
 * the whole export is written exactly once, however the person's chats move meanwhile.
 *
 * An error mid-stream errors the stream: the receiver sees the body cut short (no terminating chunk), never a body
 * that looks complete. It is logged to `log` when given, with the person's id and nothing of their data
 * (@hono/node-server prints it to stderr as well).
 */
export function exportPerson(db: Database, userId: number, log?: Logger): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  let step: Step = { kind: "chats" };
  /** The person's chat ids read ahead of the pages, ascending, and where the next scan starts. */
  let ahead: number[] = [];
  let scannedUpTo = 0;
  let scannedAll = false;
  let cancelled = false;

  /** Runs the query of `current`, moves the step on, and answers that query's lines (maybe none). */
  async function advance(current: Exclude<Step, { kind: "done" }>): Promise<string[]> {
    switch (current.kind) {
      case "chats": {
        if (ahead.length === 0 && !scannedAll) {
          ahead = await chatIdsAfter(db, userId, scannedUpTo);
          scannedAll = ahead.length < EXPORT_CHAT_IDS_PER_SCAN;
          scannedUpTo = ahead.at(-1) ?? scannedUpTo;
          return [];
        }
        const page = ahead.slice(0, EXPORT_PAGE_ROWS);
        ahead = ahead.slice(EXPORT_PAGE_ROWS);
        if (page.length === 0) {
          step = { kind: "blocks", afterBlocked: 0 };
          return [];
        }
        const rows = await chatPage(db, userId, page);
        step = { kind: "messages", chats: page, afterChat: 0, afterMessage: 0 };
        return [
          ...rows.map((r) => line("chat", r.chat)),
          ...rows
            .filter((r) => r.read_id !== null)
            .map((r) => line("read", { chat_id: Number(r.id), message_id: Number(r.read_id) })),
        ];
      }
      case "messages": {
        // Only the chats not finished yet: the ones before the cursor would be index descents for nothing.
        const chats = current.chats.filter((id) => id >= current.afterChat);
        const rows = await messagePage(db, userId, chats, current.afterChat, current.afterMessage);
        const last = rows.at(-1);
        step =
          last && rows.length === EXPORT_PAGE_ROWS
            ? { ...current, afterChat: Number(last.chat_id), afterMessage: Number(last.id) }
            : { kind: "chats" };
        return rows.map((r) =>
          line("message", r.stored_content === null ? r.message : { ...r.message, stored_content: r.stored_content }),
        );
      }
      case "blocks": {
        const rows = await blockPage(db, userId, current.afterBlocked);
        const last = rows.at(-1);
        step =
          last && rows.length === EXPORT_PAGE_ROWS
            ? { kind: "blocks", afterBlocked: Number(last.blocked_id) }
            : { kind: "reports", afterType: "", afterTarget: 0 };
        return rows.map((r) => line("block", { blocked_id: Number(r.blocked_id), created_at: r.created_at }));
      }
      case "reports": {
        const rows = await reportPage(db, userId, current.afterType, current.afterTarget);
        const last = rows.at(-1);
        step =
          last && rows.length === EXPORT_PAGE_ROWS
            ? { kind: "reports", afterType: last.target_type, afterTarget: Number(last.target_id) }
            : { kind: "done" };
        return rows.map((r) =>
          line("report", {
            id: Number(r.id),
            reason: r.reason,
            note: r.note,
            target: { type: r.target_type, id: Number(r.target_id) },
            message: r.message ?? null,
            created_at: r.created_at,
          }),
        );
      }
    }
  }

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          // A query with no lines (a scan of ids, a page of chats where they sent nothing) goes on to the next:
          // one chunk per pull, never an empty one.
          while (!cancelled) {
            if (step.kind === "done") {
              controller.close();
              return;
            }
            const lines = await advance(step);
            // Cancelled while the query ran: nothing more is enqueued or asked.
            if (cancelled) return;
            if (lines.length > 0) {
              controller.enqueue(encoder.encode(`${lines.join("\n")}\n`));
              return;
            }
          }
        } catch (error) {
          log?.error({ err: error, user: userId, step: step.kind }, "the export of a person's data failed mid-stream");
          throw error;
        }
      },
      cancel() {
        cancelled = true;
      },
    },
    // Nothing is read before it is asked for: a query runs when the receiver wants a chunk.
    { highWaterMark: 0 },
  );
}

/**
 * The person's next `EXPORT_CHAT_IDS_PER_SCAN` chat ids after `afterChat`, ascending. By chat id, because an id
 * never moves: paging by activity, the order the index has, would miss or repeat the chats whose activity moves
 * during the export.
 *
 * No index orders a person's chats by id: chat_participants has only (user_id, last_activity_at, chat_id), and chats
 * only (buyer_id, seller_id), for one role. So each scan reads all the person's entries of the activity index
 * (index-only: 20–30 ms per 100,000) and keeps the next ids: a scan's cost grows with the account, and the export's
 * with its square over EXPORT_CHAT_IDS_PER_SCAN (see the README: an index on chats (seller_id, id) would make each
 * role one range scan). `chat_id + 0` keeps the planner from walking the primary key
 * (chat_id, user_id) in id order instead: for a person whose chats are scattered among everyone's, that reads
 * every chat after the cursor, and the last scan reads to the end of the table.
 */
async function chatIdsAfter(db: Database, userId: number, afterChat: number): Promise<number[]> {
  const rows = rowsOf<{ chat_id: Id }>(
    await db.execute(sql`
      select p.chat_id from chat_participants p
      where p.user_id = ${userId} and p.chat_id > ${afterChat}
      order by p.chat_id + 0
      limit ${EXPORT_CHAT_IDS_PER_SCAN}`),
  );
  return rows.map((r) => Number(r.chat_id));
}

/** The chats `chats` as `userId` sees them (lc_chat_view), with their read marker, in the order given. */
async function chatPage(db: Database, userId: number, chats: number[]): Promise<ChatRow[]> {
  return rowsOf<ChatRow>(
    await db.execute(sql`
      select c.id, lc_chat_view(c, ${userId}::bigint) as chat, p.last_read_message_id as read_id
      from unnest(${sql.param(chats)}::bigint[]) with ordinality as page(chat_id, ord)
      join chats c on c.id = page.chat_id
      join chat_participants p on p.chat_id = page.chat_id and p.user_id = ${userId}
      order by page.ord`),
  );
}

/**
 * The messages `userId` sent in `chats` after (`afterChat`, `afterMessage`), in (chat, id) order: an ordered range
 * scan of messages_chat_history_idx per chat (`= any` on its first column keeps the index order), the other
 * participant's messages and the platform's filtered out on the way.
 */
async function messagePage(
  db: Database,
  userId: number,
  chats: number[],
  afterChat: number,
  afterMessage: number,
): Promise<MessageRow[]> {
  return rowsOf<MessageRow>(
    await db.execute(sql`
      select m.chat_id, m.id, lc_message_json(m) as message,
        case when m.deleted_at is not null and m.content <> '' then m.content end as stored_content
      from messages m
      where m.chat_id = any(${sql.param(chats)}::bigint[])
        and (m.chat_id, m.id) > (${afterChat}::bigint, ${afterMessage}::bigint)
        and m.sender_id = ${userId}
      order by m.chat_id, m.id
      limit ${EXPORT_PAGE_ROWS}`),
  );
}

/** The blocks `userId` made, along the primary key (blocker_id, blocked_id). */
async function blockPage(db: Database, userId: number, afterBlocked: number): Promise<BlockRow[]> {
  return rowsOf<BlockRow>(
    await db.execute(sql`
      select b.blocked_id, lc_iso(b.created_at) as created_at
      from blocks b
      where b.blocker_id = ${userId} and b.blocked_id > ${afterBlocked}
      order by b.blocked_id
      limit ${EXPORT_PAGE_ROWS}`),
  );
}

/** The reports `userId` made, along reports_reporter_target_key (reporter_id, target_type, target_id). */
async function reportPage(db: Database, userId: number, afterType: string, afterTarget: number): Promise<ReportRow[]> {
  return rowsOf<ReportRow>(
    await db.execute(sql`
      select r.id, r.reason, r.note, r.target_type, r.target_id, r.message, lc_iso(r.created_at) as created_at
      from reports r
      where r.reporter_id = ${userId} and (r.target_type, r.target_id) > (${afterType}::text, ${afterTarget}::bigint)
      order by r.target_type, r.target_id
      limit ${EXPORT_PAGE_ROWS}`),
  );
}
