import type { Message } from "@listings-chat/shared";
import { ErrorCode } from "@listings-chat/shared";
import { requireParticipant, touchChat } from "../chats/repository.ts";
import type { Database } from "../db/client.ts";
import { toMessage } from "../db/rows.ts";
import { ChatError, notFound, storing } from "../errors.ts";
import { appendEvent, scrubMessageContent } from "../events/log.ts";
import type { PublishEvent } from "../events/publisher.ts";
import type { SendLimiter } from "../limits/send-limiter.ts";
import { findByClientMsgId, findMessage, insertMessage, pageOfMessages, updateLiveMessage } from "./repository.ts";

export interface MessageServiceDeps {
  db: Database;
  publish: PublishEvent;
  sendLimiter: SendLimiter;
}

export interface SendResult {
  message: Message;
  /** False when this `client_msg_id` was already stored: the same message is returned again. */
  created: boolean;
}

export type MessageService = ReturnType<typeof createMessageService>;

/** Sending, editing, deleting and paging messages. REST and WebSocket both come through here. */
export function createMessageService({ db, publish, sendLimiter }: MessageServiceDeps) {
  /** `executor` is the transaction when called inside one: a query on `db` there could wait for a pool connection forever. */
  async function findRepeat(senderId: number, chatId: number, clientMsgId: string | null, executor: Database = db) {
    if (!clientMsgId) return undefined;
    const existing = await findByClientMsgId(executor, senderId, clientMsgId);
    if (existing && existing.chatId !== chatId) {
      throw new ChatError(
        ErrorCode.conflict,
        409,
        "this client_msg_id was already used in another chat: use a new one",
      );
    }
    return existing;
  }

  /** The message as the sender may touch it: 404 for outsiders, 403 for the other participant. */
  async function requireOwnMessage(userId: number, messageId: number) {
    const message = await findMessage(db, messageId);
    if (!message) throw notFound("message");
    const chat = await requireParticipant(db, message.chatId, userId);
    if (message.senderId !== userId) {
      throw new ChatError(ErrorCode.forbidden, 403, "only the sender can change a message");
    }
    return { message, chat };
  }

  return {
    async send(senderId: number, chatId: number, content: string, clientMsgId: string | null): Promise<SendResult> {
      const chat = await storing(() => requireParticipant(db, chatId, senderId));
      const repeat = await storing(() => findRepeat(senderId, chatId, clientMsgId));
      if (repeat) return { message: toMessage(repeat), created: false };

      await storing(() => sendLimiter.consume(senderId));
      let stored: { message: Message; events?: Awaited<ReturnType<typeof appendEvent>> };
      try {
        stored = await storing(() =>
          db.transaction(async (tx) => {
            const row = await insertMessage(tx, { chatId, senderId, content, clientMsgId });
            if (!row) return { message: toMessage((await findRepeat(senderId, chatId, clientMsgId, tx))!) };
            await touchChat(tx, chatId, row.createdAt);
            const message = toMessage(row);
            const events = await appendEvent(tx, { type: "new_message", chat_id: chatId, message }, [
              chat.buyerId,
              chat.sellerId,
            ]);
            return { message, events };
          }),
        );
      } catch (error) {
        await sendLimiter.refund(senderId);
        throw error;
      }
      if (!stored.events) {
        // A concurrent send with the same client_msg_id won the race; this one stored nothing.
        await sendLimiter.refund(senderId);
        return { message: stored.message, created: false };
      }
      publish(stored.events);
      return { message: stored.message, created: true };
    },

    async edit(userId: number, messageId: number, content: string): Promise<Message> {
      const { message, chat } = await storing(() => requireOwnMessage(userId, messageId));
      const deletedConflict = () => new ChatError(ErrorCode.conflict, 409, "a deleted message cannot be edited");
      if (message.deletedAt) throw deletedConflict();
      const { edited, events } = await storing(() =>
        db.transaction(async (tx) => {
          // The row is re-checked here: a delete may have committed since the look above.
          const row = await updateLiveMessage(tx, messageId, { content, editedAt: new Date() });
          if (!row) throw deletedConflict();
          const edited = toMessage(row);
          const events = await appendEvent(tx, { type: "message_edited", chat_id: row.chatId, message: edited }, [
            chat.buyerId,
            chat.sellerId,
          ]);
          return { edited, events };
        }),
      );
      publish(events);
      return edited;
    },

    async remove(userId: number, messageId: number): Promise<Message> {
      const { message, chat } = await storing(() => requireOwnMessage(userId, messageId));
      if (message.deletedAt) return toMessage(message);
      const result = await storing(() =>
        db.transaction(async (tx) => {
          const row = await updateLiveMessage(tx, messageId, { deletedAt: new Date() });
          // Deleted by a concurrent request: that one told everyone; this one answers the same message.
          if (!row) return undefined;
          await scrubMessageContent(tx, messageId);
          const deleted = toMessage(row);
          const events = await appendEvent(tx, { type: "message_deleted", chat_id: row.chatId, message: deleted }, [
            chat.buyerId,
            chat.sellerId,
          ]);
          return { deleted, events };
        }),
      );
      if (!result) {
        const current = await storing(() => findMessage(db, messageId));
        if (!current) throw notFound("message");
        return toMessage(current);
      }
      publish(result.events);
      return result.deleted;
    },

    /** Newest first; `has_more` tells whether older messages remain before the last one returned. */
    async page(userId: number, chatId: number, before: number | undefined, limit: number) {
      return storing(async () => {
        await requireParticipant(db, chatId, userId);
        const rows = await pageOfMessages(db, chatId, before, limit + 1);
        return { messages: rows.slice(0, limit).map(toMessage), has_more: rows.length > limit };
      });
    },
  };
}
