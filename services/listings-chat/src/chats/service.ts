import type { Chat, ChatSummary } from "@listings-chat/shared";
import { ErrorCode } from "@listings-chat/shared";
import type { Database } from "../db/client.ts";
import { ChatError, storing } from "../errors.ts";
import type { PublishEvent } from "../events/publisher.ts";
import { chatListBody, markRead, openChat, unreadBody } from "./repository.ts";

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
  const listBody = (userId: number, limit: number) => storing(() => chatListBody(reads, userId, limit));
  const badgeBody = (userId: number) => storing(() => unreadBody(reads, userId, UNREAD_CHATS_LISTED));
  return {
    /** The chat of (listing, buyer, seller), created on first contact. */
    async open(buyerId: number, listingId: number, sellerId: number): Promise<{ chat: Chat; created: boolean }> {
      if (buyerId === sellerId) throw new ChatError(ErrorCode.selfChat, 400, "you cannot open a chat with yourself");
      const { chat, created, events } = await storing(() => openChat(db, listingId, buyerId, sellerId));
      if (created) publish(events);
      return { chat, created };
    },

    /** `GET /api/v1/chats`'s body, `{"chats": [...]}`, written by PostgreSQL and passed on as it is. */
    listBody,

    /** The same, parsed (for callers in this process). */
    async list(userId: number, limit: number): Promise<ChatSummary[]> {
      return (JSON.parse(await listBody(userId, limit)) as { chats: ChatSummary[] }).chats;
    },

    /**
     * The header badge's body, `{"total": 3, "chats": {"12": 2, "15": 1}}`: the total over every chat, and the
     * counts of the most recently active chats with something unread (at most `UNREAD_CHATS_LISTED`), so
     * that the answer costs the same for a seller with 100,000 chats as for a buyer with one.
     */
    unreadBody: badgeBody,

    /** The same, parsed. */
    async unread(userId: number): Promise<{ total: number; chats: Record<string, number> }> {
      return JSON.parse(await badgeBody(userId)) as { total: number; chats: Record<string, number> };
    },

    /** Marks everything up to `messageId` read; emits `message_read` only when the marker moved. */
    async markRead(userId: number, chatId: number, messageId: number) {
      const { unread, events } = await storing(() => markRead(db, userId, chatId, messageId));
      if (events.length > 0) publish(events);
      return { chat_id: chatId, message_id: messageId, unread_count: unread };
    },
  };
}
