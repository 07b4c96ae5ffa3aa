import type { ChatEvent, ChatEventDraft } from "@listings-chat/shared";
import { and, asc, eq, gt, inArray, lte, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { chatEvents, userEvents, userStreams } from "../db/schema.ts";

/** One event as one user sees it (with that user's `event_id`): what the bus carries between instances. */
export interface AddressedEvent {
  userId: number;
  event: ChatEvent;
}

/**
 * Appends a change to the streams of `audience`, inside the caller's transaction, in one statement: the
 * change is stored once in `chat_events`, and each user's stream end is bumped (in ascending user id, so
 * concurrent writers take the row locks in one order and never deadlock) and gets a row in `user_events`.
 *
 * The row locks on `user_streams` are held until the transaction ends, so one user's ids are handed out in
 * commit order and a rolled-back transaction gives its ids back: each stream is dense (1, 2, 3 …) and a
 * reader that has seen N of a stream has seen everything before N. Writers to different users never wait
 * on one another. Call it as the last statement of the transaction to keep the locks short.
 */
export async function appendEvent(
  tx: Database,
  draft: ChatEventDraft,
  audience: readonly number[],
): Promise<AddressedEvent[]> {
  const chatId = "chat" in draft ? draft.chat.id : draft.chat_id;
  const messageId = "message" in draft ? draft.message.id : "message_id" in draft ? draft.message_id : null;
  const { type, ...payload } = draft;
  const users = [...new Set(audience)].sort((a, b) => a - b);
  const result = await tx.execute(sql`
    with stored as (
      insert into ${chatEvents} (chat_id, type, message_id, payload)
      values (${chatId}, ${type}, ${messageId}, ${JSON.stringify(payload)}::jsonb)
      returning id
    ), bumped as (
      insert into ${userStreams} (user_id, last_event_id)
      select u, 1 from unnest(${`{${users.join(",")}}`}::bigint[]) as u order by u
      on conflict (user_id) do update set last_event_id = ${userStreams}.last_event_id + 1
      returning user_id, last_event_id
    )
    insert into ${userEvents} (user_id, event_id, chat_event_id)
    select bumped.user_id, bumped.last_event_id, stored.id from bumped, stored
    returning user_id, event_id`);
  const rows = (result as unknown as { rows: Array<{ user_id: string | number; event_id: string | number }> }).rows;
  if (rows.length !== users.length) throw new Error(`appended to ${rows.length} of ${users.length} streams`);
  return rows
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
  const rows = await db
    .select(eventColumns)
    .from(userEvents)
    .innerJoin(chatEvents, eq(chatEvents.id, userEvents.chatEventId))
    .where(and(eq(userEvents.userId, userId), gt(userEvents.eventId, after)))
    .orderBy(asc(userEvents.eventId))
    .limit(limit);
  return rows.map(toEvent);
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

/** Blanks the content of a deleted message in the events that carried it, so replay does not resurrect it. */
export async function scrubMessageContent(tx: Database, messageId: number): Promise<void> {
  await tx
    .update(chatEvents)
    .set({ payload: sql`jsonb_set(${chatEvents.payload}, '{message,content}', '""'::jsonb)` })
    .where(and(eq(chatEvents.messageId, messageId), inArray(chatEvents.type, ["new_message", "message_edited"])));
}
