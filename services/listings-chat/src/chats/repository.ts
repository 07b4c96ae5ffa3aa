import { and, count, desc, eq, gt, inArray, isNull, ne, sql } from "drizzle-orm";
import { alias } from "drizzle-orm/pg-core";
import type { Database } from "../db/client.ts";
import type { ChatRow, MessageRow } from "../db/rows.ts";
import { chatParticipants, chats, messages } from "../db/schema.ts";
import { notFound } from "../errors.ts";

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

export async function findChat(db: Database, listingId: number, buyerId: number, sellerId: number) {
  const [row] = await db
    .select()
    .from(chats)
    .where(and(eq(chats.listingId, listingId), eq(chats.buyerId, buyerId), eq(chats.sellerId, sellerId)));
  return row;
}

/** Inserts the chat and its two participants; undefined when the triple already exists. */
export async function insertChat(
  tx: Database,
  listingId: number,
  buyerId: number,
  sellerId: number,
): Promise<ChatRow | undefined> {
  const [chat] = await tx.insert(chats).values({ listingId, buyerId, sellerId }).onConflictDoNothing().returning();
  if (!chat) return undefined;
  await tx.insert(chatParticipants).values([
    { chatId: chat.id, userId: buyerId, role: "buyer", lastActivityAt: chat.lastActivityAt },
    { chatId: chat.id, userId: sellerId, role: "seller", lastActivityAt: chat.lastActivityAt },
  ]);
  return chat;
}

export async function touchChat(tx: Database, chatId: number, at: Date): Promise<void> {
  // greatest(): concurrent sends commit in any order, and activity never moves back.
  await tx
    .update(chats)
    .set({ lastActivityAt: sql`greatest(${chats.lastActivityAt}, ${at})` })
    .where(eq(chats.id, chatId));
  await tx
    .update(chatParticipants)
    .set({ lastActivityAt: sql`greatest(${chatParticipants.lastActivityAt}, ${at})` })
    .where(eq(chatParticipants.chatId, chatId));
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

/**
 * Moves `userId`'s read marker in `chatId` forward to `messageId`.
 * Returns false when it was already there or further (reading is idempotent and never goes back).
 */
export async function advanceReadMarker(tx: Database, chatId: number, userId: number, messageId: number) {
  const updated = await tx
    .update(chatParticipants)
    .set({ lastReadMessageId: messageId })
    .where(
      and(
        eq(chatParticipants.chatId, chatId),
        eq(chatParticipants.userId, userId),
        sql`coalesce(${chatParticipants.lastReadMessageId}, 0) < ${messageId}`,
      ),
    )
    .returning({ chatId: chatParticipants.chatId });
  return updated.length > 0;
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
