import type { Chat, ChatSummary } from "@listings-chat/shared";
import { ErrorCode } from "@listings-chat/shared";
import type { Database } from "../db/client.ts";
import { toChat, toMessage } from "../db/rows.ts";
import { ChatError, storing } from "../errors.ts";
import type { PublishEvent } from "../events/publisher.ts";
import { lastMessagesOf, listChatsOf, markRead, openChat, unreadCountsOf } from "./repository.ts";

export interface ChatServiceDeps {
  db: Database;
  publish: PublishEvent;
}

export type ChatService = ReturnType<typeof createChatService>;

/** Opening chats, listing them, unread counts and read receipts. */
export function createChatService({ db, publish }: ChatServiceDeps) {
  return {
    /** The chat of (listing, buyer, seller), created on first contact. */
    async open(buyerId: number, listingId: number, sellerId: number): Promise<{ chat: Chat; created: boolean }> {
      if (buyerId === sellerId) throw new ChatError(ErrorCode.selfChat, 400, "you cannot open a chat with yourself");
      const { chat, created, events } = await storing(() => openChat(db, listingId, buyerId, sellerId));
      if (created) publish(events);
      return { chat, created };
    },

    async list(userId: number, limit: number): Promise<ChatSummary[]> {
      return storing(async () => {
        const rows = await listChatsOf(db, userId, limit);
        const ids = rows.map((r) => r.chat.id);
        const [lastMessages, unread] = await Promise.all([lastMessagesOf(db, ids), unreadCountsOf(db, userId, ids)]);
        return rows.map(({ chat, peerLastReadMessageId }) => {
          const last = lastMessages.get(chat.id);
          return {
            ...toChat(chat),
            last_message: last ? toMessage(last) : null,
            unread_count: unread.get(chat.id) ?? 0,
            peer_last_read_message_id: peerLastReadMessageId,
          };
        });
      });
    },

    /** The header badge: `{"total": 3, "chats": {"12": 2, "15": 1}}`, chats with nothing unread left out. */
    async unread(userId: number): Promise<{ total: number; chats: Record<string, number> }> {
      const counts = await storing(() => unreadCountsOf(db, userId));
      const chats: Record<string, number> = {};
      let total = 0;
      for (const [chatId, n] of counts) {
        chats[String(chatId)] = n;
        total += n;
      }
      return { total, chats };
    },

    /** Marks everything up to `messageId` read; emits `message_read` only when the marker moved. */
    async markRead(userId: number, chatId: number, messageId: number) {
      const { unread, events } = await storing(() => markRead(db, userId, chatId, messageId));
      if (events.length > 0) publish(events);
      return { chat_id: chatId, message_id: messageId, unread_count: unread };
    },
  };
}
