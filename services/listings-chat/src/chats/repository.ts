import type { Chat } from "@listings-chat/shared";
import { and, count, desc, eq, gt, inArray, isNull, ne, sql } from "drizzle-orm";
import { alias } from "drizzle-orm/pg-core";
import type { Database } from "../db/client.ts";
import type { ChatRow, MessageRow } from "../db/rows.ts";
import { chatParticipants, chats, messages } from "../db/schema.ts";
import { notFound } from "../errors.ts";
import { type AppendedRow, addressedEvents, rowsOf } from "../events/log.ts";

/** The chat, when `userId` takes part in it; otherwise the same 404 as for a chat that does not exist. */
export async function requireParticipant(db: Database, chatId: number, userId: number): Promise<ChatRow> {
  const [row] = await db
    .select({ chat: chats })
    .from(chats)
    .innerJoin(chatParticipants, and(eq(chatParticipants.chatId, chats.id), eq(chatParticipants.userId, userId)))
    .where(eq(chats.id, chatId));
  if (!row) throw notFound("chat");
  return row.chat;
}

interface OpenRow extends AppendedRow {
  created: boolean;
  chat: Chat;
}

/** The chat of (listing, buyer, seller), created with its participants and its event on first contact. */
export async function openChat(db: Database, listingId: number, buyerId: number, sellerId: number) {
  const rows = rowsOf<OpenRow>(
    await db.execute(sql`select * from lc_open_chat(${listingId}, ${buyerId}, ${sellerId})`),
  );
  const chat = rows[0]?.chat;
  if (!chat) throw new Error("lc_open_chat returned no row");
  return { chat, created: rows[0]!.created, events: addressedEvents(rows, { type: "chat_created", chat }) };
}

/** `userId`'s chats, newest activity first, with how far they and the other participant have read. */
export async function listChatsOf(db: Database, userId: number, limit: number) {
  const peer = alias(chatParticipants, "peer");
  return db
    .select({
      chat: chats,
      lastReadMessageId: chatParticipants.lastReadMessageId,
      peerLastReadMessageId: peer.lastReadMessageId,
    })
    .from(chatParticipants)
    .innerJoin(chats, eq(chats.id, chatParticipants.chatId))
    .leftJoin(peer, and(eq(peer.chatId, chatParticipants.chatId), ne(peer.userId, userId)))
    .where(eq(chatParticipants.userId, userId))
    .orderBy(desc(chatParticipants.lastActivityAt), desc(chatParticipants.chatId))
    .limit(limit);
}

/** The newest message of each chat, in one query. */
export async function lastMessagesOf(db: Database, chatIds: number[]): Promise<Map<number, MessageRow>> {
  if (chatIds.length === 0) return new Map();
  const rows = await db
    .selectDistinctOn([messages.chatId])
    .from(messages)
    .where(inArray(messages.chatId, chatIds))
    .orderBy(messages.chatId, desc(messages.id));
  return new Map(rows.map((m) => [m.chatId, m]));
}

/** Unread messages per chat for `userId`: others' messages after their last read one, not deleted. */
export async function unreadCountsOf(db: Database, userId: number, chatIds?: number[]): Promise<Map<number, number>> {
  const rows = await db
    .select({ chatId: messages.chatId, unread: count() })
    .from(messages)
    .innerJoin(chatParticipants, and(eq(chatParticipants.chatId, messages.chatId), eq(chatParticipants.userId, userId)))
    .where(
      and(
        gt(messages.id, sql`coalesce(${chatParticipants.lastReadMessageId}, 0)`),
        ne(messages.senderId, userId),
        isNull(messages.deletedAt),
        chatIds ? inArray(messages.chatId, chatIds) : undefined,
      ),
    )
    .groupBy(messages.chatId);
  return new Map(rows.map((r) => [r.chatId, r.unread]));
}

interface ReadRow extends AppendedRow {
  status: "read" | "unchanged" | "chat_not_found" | "message_not_found";
  unread_count: string | number | null;
  /** When the marker moved: the commit's clock, as the event carries it. */
  read_at: string | null;
}

/**
 * Moves `userId`'s read marker in `chatId` forward to `messageId` (reading is idempotent and never goes
 * back) and counts what is left unread; `events` is empty when the marker did not move.
 */
export async function markRead(db: Database, userId: number, chatId: number, messageId: number) {
  const rows = rowsOf<ReadRow>(await db.execute(sql`select * from lc_mark_read(${userId}, ${chatId}, ${messageId})`));
  const first = rows[0];
  if (!first) throw new Error("lc_mark_read returned no row");
  if (first.status === "chat_not_found") throw notFound("chat");
  if (first.status === "message_not_found") throw notFound("message");
  const events =
    first.status === "read"
      ? addressedEvents(rows, {
          type: "message_read",
          chat_id: chatId,
          message_id: messageId,
          read_by: userId,
          read_at: first.read_at!,
        })
      : [];
  return { unread: Number(first.unread_count), events };
}

/** Everyone who shares at least one chat with `userId`: who hears about their presence. */
export async function contactsOf(db: Database, userId: number): Promise<number[]> {
  const rows = await db
    .selectDistinct({
      userId:
        sql<number>`case when ${chats.buyerId} = ${userId} then ${chats.sellerId} else ${chats.buyerId} end`.mapWith(
          Number,
        ),
    })
    .from(chatParticipants)
    .innerJoin(chats, eq(chats.id, chatParticipants.chatId))
    .where(eq(chatParticipants.userId, userId));
  return rows.map((r) => r.userId);
}
