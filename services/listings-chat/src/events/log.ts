import type { ChatEvent, ChatEventDraft } from "@listings-chat/shared";
import { and, asc, eq, gt, inArray, lte } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { chatEvents, userEvents, userStreams } from "../db/schema.ts";

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
export function addressedEvents(rows: readonly AppendedRow[], draft: ChatEventDraft): AddressedEvent[] {
  return rows
    .filter((row) => row.user_id !== null)
    .map((row) => ({ userId: Number(row.user_id), event: { ...draft, event_id: Number(row.event_id) } as ChatEvent }))
    .sort((a, b) => a.userId - b.userId);
}

/** The end of `userId`'s stream: a valid cursor for them (0 before their first event). */
export async function lastEventId(db: Database, userId: number): Promise<number> {
  const [row] = await db
    .select({ id: userStreams.lastEventId })
    .from(userStreams)
    .where(eq(userStreams.userId, userId));
  return row?.id ?? 0;
}

/** The ends of several users' streams, for the tail check of the users an instance serves. */
export async function lastEventIds(db: Database, userIds: readonly number[]): Promise<Map<number, number>> {
  if (userIds.length === 0) return new Map();
  const rows = await db
    .select({ userId: userStreams.userId, id: userStreams.lastEventId })
    .from(userStreams)
    .where(inArray(userStreams.userId, [...userIds]));
  return new Map(rows.map((row) => [row.userId, row.id]));
}

const eventColumns = { id: userEvents.eventId, type: chatEvents.type, payload: chatEvents.payload };

function toEvent(row: { id: number; type: string; payload: unknown }): ChatEvent {
  return { type: row.type, ...(row.payload as object), event_id: row.id } as ChatEvent;
}

/** `userId`'s events after `after`, oldest first, at most `limit`: a range scan of the stream's key. */
export async function readEventsForUser(
  db: Database,
  userId: number,
  after: number,
  limit: number,
): Promise<ChatEvent[]> {
  return (await eventsAfter(db, userId, after, limit)).map(toEvent);
}

/** The query of `readEventsForUser` (the plan tests read its plan). */
export function eventsAfter(db: Database, userId: number, after: number, limit: number) {
  return db
    .select(eventColumns)
    .from(userEvents)
    .innerJoin(chatEvents, eq(chatEvents.id, userEvents.chatEventId))
    .where(and(eq(userEvents.userId, userId), gt(userEvents.eventId, after)))
    .orderBy(asc(userEvents.eventId))
    .limit(limit);
}

/** `userId`'s events with `after < event_id <= upTo`: how a hub fills a gap in what the bus brought. */
export async function readEventRange(
  db: Database,
  userId: number,
  after: number,
  upTo: number,
): Promise<AddressedEvent[]> {
  const rows = await db
    .select(eventColumns)
    .from(userEvents)
    .innerJoin(chatEvents, eq(chatEvents.id, userEvents.chatEventId))
    .where(and(eq(userEvents.userId, userId), gt(userEvents.eventId, after), lte(userEvents.eventId, upTo)))
    .orderBy(asc(userEvents.eventId));
  return rows.map((row) => ({ userId, event: toEvent(row) }));
}
