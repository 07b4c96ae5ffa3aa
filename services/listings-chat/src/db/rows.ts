import type { Message } from "@listings-chat/shared";
import type { chats, messages } from "./schema.ts";

export type ChatRow = typeof chats.$inferSelect;
export type MessageRow = typeof messages.$inferSelect;

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** A message row in the API's shape; a deleted message keeps its id and loses its content. */
export function toMessage(row: MessageRow): Message {
  return {
    id: row.id,
    chat_id: row.chatId,
    sender_id: row.senderId,
    content: row.deletedAt ? "" : row.content,
    client_msg_id: row.clientMsgId,
    created_at: row.createdAt.toISOString(),
    edited_at: iso(row.editedAt),
    deleted_at: iso(row.deletedAt),
  };
}
