import type { Chat, ChatSummary } from "@listings-chat/shared";
import { ErrorCode } from "@listings-chat/shared";
import type { Database } from "../db/client.ts";
import { toChat, toMessage } from "../db/rows.ts";
import { ChatError, storing } from "../errors.ts";
import type { PublishEvent } from "../events/publisher.ts";
import { listChatsOf, markRead, messagesById, openChat, unreadOf } from "./repository.ts";

/** How many chats the badge answer lists by name (the total counts them all): the chat list's first page. */
export const UNREAD_CHATS_LISTED = 100;

export interface ChatServiceDeps {
  db: Database;
  /** The pool of page reads (lists, badges); `db` when there is one pool. */
  reads?: Database;
  publish: PublishEvent;
}

export type ChatService = ReturnType<typeof createChatService>;

/** Opening chats, listing them, unread counts and read receipts. */
export function createChatService({ db, reads = db, publish }: ChatServiceDeps) {
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
        const rows = await listChatsOf(reads, userId, limit);
        const lastIds = rows.flatMap((r) => (r.chat.lastMessageId ? [r.chat.lastMessageId] : []));
        const lastMessages = await messagesById(reads, lastIds);
        return rows.map(({ chat, unreadCount, peerLastReadMessageId }) => {
          const last = chat.lastMessageId ? lastMessages.get(chat.lastMessageId) : undefined;
          return {
            ...toChat(chat),
            last_message: last ? toMessage(last) : null,
            unread_count: unreadCount,
            peer_last_read_message_id: peerLastReadMessageId,
          };
        });
      });
    },

    /**
     * The header badge: `{"total": 3, "chats": {"12": 2, "15": 1}}`: the total over every chat, and the
     * counts of the most recently active chats with something unread (at most `UNREAD_CHATS_LISTED`), so
     * that the answer costs the same for a seller with 100,000 chats as for a buyer with one.
     */
    async unread(userId: number): Promise<{ total: number; chats: Record<string, number> }> {
      const { total, chats } = await storing(() => unreadOf(reads, userId, UNREAD_CHATS_LISTED));
      return { total, chats: Object.fromEntries(chats.map((c) => [String(c.chatId), c.unread])) };
    },

    /** Marks everything up to `messageId` read; emits `message_read` only when the marker moved. */
    async markRead(userId: number, chatId: number, messageId: number) {
      const { unread, events } = await storing(() => markRead(db, userId, chatId, messageId));
      if (events.length > 0) publish(events);
      return { chat_id: chatId, message_id: messageId, unread_count: unread };
    },
  };
}
