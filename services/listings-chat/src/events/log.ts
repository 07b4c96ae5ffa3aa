import type { ChatEvent, ChatEventDraft } from "@listings-chat/shared";
import { and, asc, eq, gt, inArray, lte, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { chatEvents, chatParticipants, chats, eventCounter } from "../db/schema.ts";

/** An event together with the users who may see it: what the bus carries between instances. */
export interface AddressedEvent {
  event: ChatEvent;
  audience: number[];
}

/**
 * Appends an event inside the caller's transaction and returns it with its id.
 *
 * The id comes from the single `event_counter` row. Its row lock is held until the transaction
 * ends, so ids are handed out in commit order and a rolled-back transaction gives its id back:
 * the log is dense (1, 2, 3 …) and a reader that has seen N has seen everything before N.
 * Call it as the last statement of the transaction to keep the lock short.
 */
export async function appendEvent(tx: Database, draft: ChatEventDraft): Promise<ChatEvent> {
  const [counter] = await tx
    .update(eventCounter)
    .set({ lastEventId: sql`${eventCounter.lastEventId} + 1` })
    .where(eq(eventCounter.id, 1))
    .returning({ id: eventCounter.lastEventId });
  if (!counter) throw new Error("event_counter has no row: the migrations were not applied");
  const chatId = "chat" in draft ? draft.chat.id : draft.chat_id;
  const messageId = "message" in draft ? draft.message.id : "message_id" in draft ? draft.message_id : null;
  const { type, ...payload } = draft;
  await tx.insert(chatEvents).values({ id: counter.id, chatId, type, messageId, payload });
  return { ...draft, event_id: counter.id } as ChatEvent;
}

/** The newest event id in the whole log: a valid cursor for anyone. */
export async function lastEventId(db: Database): Promise<number> {
  const [row] = await db.select({ id: eventCounter.lastEventId }).from(eventCounter).where(eq(eventCounter.id, 1));
  return row?.id ?? 0;
}

type EventRow = { id: number; type: string; payload: unknown };

function toEvent(row: EventRow): ChatEvent {
  return { type: row.type, ...(row.payload as object), event_id: row.id } as ChatEvent;
}

/** The events of `userId`'s chats after `after`, oldest first. */
export async function readEventsForUser(
  db: Database,
  userId: number,
  after: number,
  limit: number,
): Promise<ChatEvent[]> {
  const rows = await db
    .select({ id: chatEvents.id, type: chatEvents.type, payload: chatEvents.payload })
    .from(chatEvents)
    .innerJoin(
      chatParticipants,
      and(eq(chatParticipants.chatId, chatEvents.chatId), eq(chatParticipants.userId, userId)),
    )
    .where(gt(chatEvents.id, after))
    .orderBy(asc(chatEvents.id))
    .limit(limit);
  return rows.map(toEvent);
}

/** Every event with `after < id <= upTo`, with its audience: how a hub fills a gap in what the bus brought. */
export async function readEventRange(db: Database, after: number, upTo: number): Promise<AddressedEvent[]> {
  const rows = await db
    .select({
      id: chatEvents.id,
      type: chatEvents.type,
      payload: chatEvents.payload,
      buyerId: chats.buyerId,
      sellerId: chats.sellerId,
    })
    .from(chatEvents)
    .innerJoin(chats, eq(chats.id, chatEvents.chatId))
    .where(and(gt(chatEvents.id, after), lte(chatEvents.id, upTo)))
    .orderBy(asc(chatEvents.id));
  return rows.map((row) => ({ event: toEvent(row), audience: [row.buyerId, row.sellerId] }));
}

/** Blanks the content of a deleted message in the events that carried it, so replay does not resurrect it. */
export async function scrubMessageContent(tx: Database, messageId: number): Promise<void> {
  await tx
    .update(chatEvents)
    .set({ payload: sql`jsonb_set(${chatEvents.payload}, '{message,content}', '""'::jsonb)` })
    .where(and(eq(chatEvents.messageId, messageId), inArray(chatEvents.type, ["new_message", "message_edited"])));
}
