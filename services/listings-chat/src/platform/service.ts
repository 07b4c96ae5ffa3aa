import type { Chat, Message } from "@listings-chat/shared";
import { ErrorCode } from "@listings-chat/shared";
import { eq } from "drizzle-orm";
import { openChat } from "../chats/repository.ts";
import type { Database } from "../db/client.ts";
import { listings } from "../db/schema.ts";
import { ChatError, listingNotFoundError, notFound, storing } from "../errors.ts";
import type { PublishEvent } from "../events/publisher.ts";
import { deleteMessageAsPlatform, storeSystemMessage } from "../messages/repository.ts";
import type { ListingFanout } from "./listing-fanout.ts";
import { type ListingFields, putListing } from "./listings.ts";
import { type Person, putPerson } from "./people.ts";
import { liftSuspension, suspendUser } from "./suspensions.ts";

export interface PlatformServiceDeps {
  db: Database;
  publish: PublishEvent;
  /** Tells the listings' chats of their changes (chat_updated), a batch at a time. */
  fanout: Pick<ListingFanout, "wake">;
  /**
   * After a suspension is stored (`until` its end in epoch ms, or null) or lifted: every instance is to know, and
   * the user's sockets, wherever they are, to close with 4003.
   */
  onSuspensionChanged: (userId: number, until: number | null | "lifted") => void;
  /** After a message is deleted: its photos (if any) are due for the sweeper (media/sweeper.ts). */
  onMessageDeleted?: () => void;
}

export type PlatformService = ReturnType<typeof createPlatformService>;

/**
 * The platform's voice (CONTRACT §8): what the monolith registers (listings, people), says (system messages),
 * opens (chats for an offer or a purchase) and enforces (removing messages, suspending users). Not limited by
 * the per-user rates: the monolith is one trusted caller behind the internal token.
 */
export function createPlatformService({
  db,
  publish,
  fanout,
  onSuspensionChanged,
  onMessageDeleted,
}: PlatformServiceDeps) {
  return {
    /** Upsert; a change reaches the listing's chats as chat_updated (after the answer, a batch at a time). */
    async putListing(id: number, fields: ListingFields) {
      const outcome = await storing(() => putListing(db, id, fields));
      if (outcome.status === "created" || outcome.status === "updated") fanout.wake();
      return outcome;
    },

    putPerson: (id: number, fields: Omit<Person, "id">) => storing(() => putPerson(db, id, fields)),

    /**
     * The chat of a registered listing's seller and `buyerId`, opened by the platform (an offer, a purchase):
     * as `POST /api/v1/chats` answers the buyer, with the same refusals, but not counted in their open limit.
     */
    async openChat(listingId: number, buyerId: number): Promise<{ chat: Chat; created: boolean }> {
      const [listing] = await storing(() =>
        db.select({ sellerId: listings.sellerId }).from(listings).where(eq(listings.id, listingId)),
      );
      if (!listing) throw listingNotFoundError();
      if (listing.sellerId === buyerId) {
        throw new ChatError(ErrorCode.selfChat, 400, `user ${buyerId} is the seller of listing ${listingId}`);
      }
      const opened = await storing(() =>
        openChat(db, listingId, buyerId, listing.sellerId, { listingsRequired: true, create: true }),
      );
      if (!opened) throw new Error("lc_open_chat answered absent to an open that creates");
      if (opened.created) publish(opened.events);
      return { chat: opened.chat, created: opened.created };
    },

    /** A system message in the chat, told to both participants; a repeated `clientMsgId` answers the stored one. */
    async postSystemMessage(
      chatId: number,
      content: string,
      data: Record<string, unknown> | null,
      clientMsgId: string | null,
    ): Promise<{ message: Message; created: boolean }> {
      const outcome = await storing(() => storeSystemMessage(db, chatId, content, data, clientMsgId));
      switch (outcome.status) {
        case "created":
          publish(outcome.events);
          return { message: outcome.message, created: true };
        case "repeat":
          return { message: outcome.message, created: false };
        case "conflict":
          throw new ChatError(
            ErrorCode.conflict,
            409,
            "this client_msg_id was already used for a system message in another chat: use a new one",
          );
        case "not_found":
          throw notFound("chat");
      }
    },

    /** Removes a message as the platform (`deleted_by` platform); one already deleted is answered as it is. */
    async deleteMessage(messageId: number, reason: string | null): Promise<Message> {
      const outcome = await storing(() => deleteMessageAsPlatform(db, messageId, reason));
      if (outcome.status === "changed") {
        publish(outcome.events);
        onMessageDeleted?.();
        return outcome.message;
      }
      if (outcome.status === "unchanged") return outcome.message;
      throw notFound("message");
    },

    /** Suspends until `until` (null: until lifted); a suspension already over when stored closes nothing. */
    async suspend(userId: number, until: Date | null, reason: string | null) {
      await storing(() => suspendUser(db, userId, until, reason));
      onSuspensionChanged(userId, until?.getTime() ?? null);
    },

    async lift(userId: number) {
      await storing(() => liftSuspension(db, userId));
      onSuspensionChanged(userId, "lifted");
    },
  };
}
