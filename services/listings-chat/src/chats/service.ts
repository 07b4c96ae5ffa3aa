import type { Chat, ChatSummary } from "@listings-chat/shared";
import { ErrorCode } from "@listings-chat/shared";
import type { Database } from "../db/client.ts";
import { ChatError, notFound, RateLimitedError, storing } from "../errors.ts";
import type { PublishEvent } from "../events/publisher.ts";
import { createRateLimiter, keptIfStored, type RateLimiter } from "../limits/rate-limiter.ts";
import { createReadCoalescing } from "./read-coalescing.ts";
import { archiveChat, chatListBody, markRead, openChat, unreadBody } from "./repository.ts";

/** How many chats the badge answer lists by name (the total counts them all): the chat list's first page. */
export const UNREAD_CHATS_LISTED = 100;

export interface ChatServiceDeps {
  db: Database;
  /** The pool of page reads (lists, badges); `db` when there is one pool. */
  reads?: Database;
  publish: PublishEvent;
  /** Chat opens per user; the contract's limits, counted in this process, when not given. */
  limits?: RateLimiter;
  /** How far apart one user's read markers in one chat are stored (CONTRACT §10: 1 s). */
  readWindowMs?: number;
  /**
   * LISTINGS_REQUIRED (CONTRACT §8): chats only on listings the platform registered. Off when not given (the
   * development default; env.ts turns it on in production).
   */
  listingsRequired?: boolean;
}

/** Of a user's read markers in one chat, at most one is stored per this; the others are merged into it. */
export const READ_WINDOW_MS = 1_000;

const unknownMessage = notFound("message").message;

export type ChatService = ReturnType<typeof createChatService>;

/** Opening chats, listing them, unread counts and read receipts. */
export function createChatService({
  db,
  reads = db,
  publish,
  limits = createRateLimiter(),
  readWindowMs = READ_WINDOW_MS,
  listingsRequired = false,
}: ChatServiceDeps) {
  const reading = createReadCoalescing({
    windowMs: readWindowMs,
    async store(userId, chatId, messageId) {
      const { unread, events } = await storing(() => markRead(db, userId, chatId, messageId));
      if (events.length > 0) publish(events);
      return { chat_id: chatId, message_id: messageId, unread_count: unread };
    },
    // A message id of another chat (or none) fails only the callers who named it.
    refusesTheId: (error) => error instanceof ChatError && error.message === unknownMessage,
  });
  const listBody = (userId: number, limit: number, archived = false) =>
    storing(() => chatListBody(reads, userId, limit, archived));
  const badgeBody = (userId: number) => storing(() => unreadBody(reads, userId, UNREAD_CHATS_LISTED));
  return {
    /**
     * The chat of (listing, buyer, seller), created on first contact. A new chat counts in the buyer's
     * CHAT_OPEN_LIMIT_PER_HOUR; opening one that exists does not, and is answered past the limit too. Refused
     * for a suspended buyer (403 `user_suspended`), a blocked pair (403), a removed listing (409 `listing_closed`), a registered listing's other seller
     * or, with `listingsRequired`, an unregistered listing (404 `listing_not_found`): under the limit or not.
     */
    async open(buyerId: number, listingId: number, sellerId: number): Promise<{ chat: Chat; created: boolean }> {
      if (buyerId === sellerId) throw new ChatError(ErrorCode.selfChat, 400, "you cannot open a chat with yourself");
      try {
        await storing(() => limits.consume("chat_open", buyerId));
      } catch (error) {
        if (!(error instanceof RateLimitedError)) throw error;
        // Answered as it would be under the limit, by the same checks: a blocked pair, a removed listing or
        // one the platform does not know is refused, not shown the chat again.
        const existing = await storing(() =>
          openChat(db, listingId, buyerId, sellerId, { listingsRequired, create: false }),
        );
        if (existing) return { chat: existing.chat, created: false };
        throw error;
      }
      // The same chat as before (or a refusal): nothing new, so it does not count.
      const opened = await keptIfStored(
        limits,
        "chat_open",
        buyerId,
        () => storing(() => openChat(db, listingId, buyerId, sellerId, { listingsRequired, create: true })),
        (outcome) => outcome?.created === true,
      );
      if (!opened) throw new Error("lc_open_chat answered absent to an open that creates");
      const { chat, created, events } = opened;
      if (created) publish(events);
      return { chat, created };
    },

    /**
     * `GET /api/v1/chats`'s body, `{"chats": [...]}`, written by PostgreSQL and passed on as it is: the chats not
     * archived, or (`archived`) those the user archived.
     */
    listBody,

    /** The same, parsed (for callers in this process). */
    async list(userId: number, limit: number, archived = false): Promise<ChatSummary[]> {
      return (JSON.parse(await listBody(userId, limit, archived)) as { chats: ChatSummary[] }).chats;
    },

    /**
     * Hides the chat from the user's own list (`archived` true) or brings it back (false), for them only
     * (CONTRACT §8); their devices hear `chat_updated` when it changed. Idempotent; not counted.
     */
    async archive(userId: number, chatId: number, archived: boolean): Promise<void> {
      const { events } = await storing(() => archiveChat(db, userId, chatId, archived));
      if (events.length > 0) publish(events);
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

    /**
     * Marks everything up to `messageId` read; emits `message_read` only when the marker moved. Never
     * refused, but coalesced (read-coalescing.ts): a marker within `readWindowMs` of the chat's previous one
     * waits for the window's end and is stored with the others of that window as their highest, and the
     * answer says what was stored (`message_id` may be higher than the one asked for).
     */
    markRead: (userId: number, chatId: number, messageId: number) => reading.markRead(userId, chatId, messageId),
  };
}
