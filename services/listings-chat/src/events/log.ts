import type { ChatEvent, ChatEventDraft } from "@listings-chat/shared";
import { eq, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { preparedPerDatabase } from "../db/prepared.ts";
import { userStreams } from "../db/schema.ts";

/** One event as one user sees it (with that user's `event_id`): what the bus carries between instances. */
export interface AddressedEvent {
  userId: number;
  event: ChatEvent;
}

/** What a write function (drizzle/0003_write_functions.sql) returns for each user it appended the change for. */
export interface AppendedRow {
  user_id: string | number | null;
  event_id: string | number | null;
}

/**
 * The rows a statement returned (node-postgres and PGlite both answer `{ rows }`). Bigints arrive as strings
 * from node-postgres and as numbers from PGlite: read them with Number().
 */
export function rowsOf<Row>(result: unknown): Row[] {
  return (result as { rows: Row[] }).rows;
}

/**
 * The change as each user it was appended for sees it, in ascending user id. The appending itself is SQL
 * (`lc_append_events`), inside the write function's own transaction: each participant's stream end is
 * bumped in ascending user id (writers never deadlock), and the row locks, held until commit, hand one
 * user's ids out in commit order while a rollback gives them back, so every stream stays dense.
 */
export function addressedEvents<Row extends AppendedRow>(
  rows: readonly Row[],
  /** The change, or, when users see it differently (a chat's `peer`), the change as a row's user sees it. */
  draft: ChatEventDraft | ((row: Row) => ChatEventDraft),
): AddressedEvent[] {
  return rows
    .filter((row) => row.user_id !== null)
    .map((row) => {
      const change = typeof draft === "function" ? draft(row) : draft;
      // Keys in the order a stream read gives them (readStreamPage): a live event and its replay read the same.
      return { userId: Number(row.user_id), event: { ...change, event_id: Number(row.event_id) } as ChatEvent };
    })
    .sort((a, b) => a.userId - b.userId);
}

/** The end of `userId`'s stream: a valid cursor for them (0 before their first event). */
export async function lastEventId(db: Database, userId: number): Promise<number> {
  const [row] = await lastEventIdQuery(db).execute({ userId });
  return row?.id ?? 0;
}

const lastEventIdQuery = preparedPerDatabase((db) =>
  db
    .select({ id: userStreams.lastEventId })
    .from(userStreams)
    .where(eq(userStreams.userId, sql.placeholder("userId")))
    .prepare("lc_last_event_id"),
);

/**
 * The ends of several users' streams, for the tail check of the users an instance serves. The ids go as one
 * array parameter, one statement prepared once per connection: a list of parameters (`IN ($1, …, $n)`) is a
 * new statement for every number of users, parsed and planned each time, and cannot pass 65,535 of them.
 */
export async function lastEventIds(db: Database, userIds: readonly number[]): Promise<Map<number, number>> {
  if (userIds.length === 0) return new Map();
  const rows = await lastEventIdsQuery(db).execute({ userIds: [...userIds] });
  return new Map(rows.map((row) => [row.userId, row.id]));
}

const lastEventIdsQuery = preparedPerDatabase((db) =>
  db
    .select({ userId: userStreams.userId, id: userStreams.lastEventId })
    .from(userStreams)
    .where(sql`${userStreams.userId} = any(${sql.placeholder("userIds")}::bigint[])`)
    .prepare("lc_last_event_ids"),
);

/**
 * How much of a stream one read brings: enough events to be cheap per event, few enough bytes that a page
 * of long messages stays well under the slow-consumer limit (CONTRACT §5: 1 MiB) when written to a socket.
 */
export const STREAM_PAGE_EVENTS = 500;
export const STREAM_PAGE_BYTES = 256 * 1024;

export interface StreamPage {
  events: ChatEvent[];
  /** The page was cut (by count or by bytes): more events may follow the last one. */
  more: boolean;
}

interface PageRow {
  event_id: string | number;
  /** NULL on the row that says the bytes cut the page short (drizzle/0005_page_reads.sql). */
  type: string | null;
  payload: object | null;
}

/**
 * A page of `userId`'s stream after `after` (and up to `upTo` when given), oldest first: at most
 * `maxEvents` events and about `maxBytes` of payload (always at least one event). A range scan of the
 * stream's key that stops at the page's end (`lc_stream_page`).
 */
export async function readStreamPage(
  db: Database,
  userId: number,
  after: number,
  {
    upTo,
    maxEvents = STREAM_PAGE_EVENTS,
    maxBytes = STREAM_PAGE_BYTES,
  }: { upTo?: number; maxEvents?: number; maxBytes?: number } = {},
): Promise<StreamPage> {
  const rows = rowsOf<PageRow>(
    await db.execute(
      sql`select * from lc_stream_page(${userId}, ${after}, ${upTo ?? null}, ${maxEvents}, ${maxBytes})`,
    ),
  );
  const cutByBytes = rows.at(-1)?.type === null;
  if (cutByBytes) rows.pop();
  const events = rows.map((row) => ({ type: row.type, ...row.payload, event_id: Number(row.event_id) }) as ChatEvent);
  return { events, more: cutByBytes || events.length === maxEvents };
}

/** `userId`'s events with `after < event_id <= upTo`, a page at a time: how a hub fills a gap the bus left. */
export async function readEventRange(
  db: Database,
  userId: number,
  after: number,
  upTo: number,
): Promise<{ events: AddressedEvent[]; more: boolean }> {
  const page = await readStreamPage(db, userId, after, { upTo });
  return { events: page.events.map((event) => ({ userId, event })), more: page.more };
}
