import { and, desc, eq, isNull, lt } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import type { MessageRow } from "../db/rows.ts";
import { messages } from "../db/schema.ts";

export async function findMessage(db: Database, messageId: number): Promise<MessageRow | undefined> {
  const [row] = await db.select().from(messages).where(eq(messages.id, messageId));
  return row;
}

export async function findByClientMsgId(db: Database, senderId: number, clientMsgId: string) {
  const [row] = await db
    .select()
    .from(messages)
    .where(and(eq(messages.senderId, senderId), eq(messages.clientMsgId, clientMsgId)));
  return row;
}

/** Inserts a message; undefined when the sender already stored one with this `client_msg_id`. */
export async function insertMessage(
  tx: Database,
  values: { chatId: number; senderId: number; content: string; clientMsgId: string | null },
): Promise<MessageRow | undefined> {
  const [row] = await tx.insert(messages).values(values).onConflictDoNothing().returning();
  return row;
}

/** A page of a chat's messages, newest first, strictly older than `before` when given. */
export async function pageOfMessages(db: Database, chatId: number, before: number | undefined, limit: number) {
  return db
    .select()
    .from(messages)
    .where(and(eq(messages.chatId, chatId), before ? lt(messages.id, before) : undefined))
    .orderBy(desc(messages.id))
    .limit(limit);
}

/** Changes a message that is not deleted; undefined when it is (or was deleted meanwhile). */
export async function updateLiveMessage(
  tx: Database,
  messageId: number,
  changes: Partial<Pick<MessageRow, "content" | "editedAt" | "deletedAt">>,
): Promise<MessageRow | undefined> {
  const [row] = await tx
    .update(messages)
    .set(changes)
    .where(and(eq(messages.id, messageId), isNull(messages.deletedAt)))
    .returning();
  return row;
}
