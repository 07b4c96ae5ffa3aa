import type { Attachment, Message } from "@listings-chat/shared";
import { type chats, type messages, PLATFORM_SENDER_ID } from "./schema.ts";

export type ChatRow = typeof chats.$inferSelect;
export type MessageRow = typeof messages.$inferSelect;

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/**
 * A message row in the API's shape (as lc_message_json builds it): a deleted message keeps its id and loses its
 * content and data; the platform's sender id is shown as null; a message deleted before 0023 was its sender's.
 */
export function toMessage(row: MessageRow): Message {
  const deleted = row.deletedAt !== null;
  return {
    id: row.id,
    chat_id: row.chatId,
    sender_id: row.senderId === PLATFORM_SENDER_ID ? null : row.senderId,
    kind: row.kind,
    content: deleted ? "" : row.content,
    data: deleted ? null : ((row.data as Record<string, unknown> | null) ?? null),
    attachments: deleted ? [] : ((row.attachments as Attachment[] | null) ?? []),
    client_msg_id: row.clientMsgId,
    created_at: row.createdAt.toISOString(),
    edited_at: iso(row.editedAt),
    deleted_at: iso(row.deletedAt),
    deleted_by: deleted ? (row.deletedBy ?? "sender") : null,
  };
}
