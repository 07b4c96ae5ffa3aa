import type { Message } from "@listings-chat/shared";
import { ErrorCode } from "@listings-chat/shared";
import { requireParticipant } from "../chats/repository.ts";
import type { Database } from "../db/client.ts";
import { toMessage } from "../db/rows.ts";
import { ChatError, notFound, RateLimitedError, storing } from "../errors.ts";
import type { PublishEvent } from "../events/publisher.ts";
import type { SendLimiter } from "../limits/send-limiter.ts";
import { createGroupCommit, defaultGroupCommit, type GroupCommitOptions } from "./group-commit.ts";
import {
  type ChangeOutcome,
  deleteMessage,
  editMessage,
  findByClientMsgId,
  pageOfMessages,
  storeMessages,
} from "./repository.ts";

export interface MessageServiceDeps {
  db: Database;
  /** The pool of page reads (message pages); `db` when there is one pool. */
  reads?: Database;
  publish: PublishEvent;
  sendLimiter: SendLimiter;
  groupCommit?: GroupCommitOptions;
}

export interface SendResult {
  message: Message;
  /** False when this `client_msg_id` was already stored: the same message is returned again. */
  created: boolean;
}

export type MessageService = ReturnType<typeof createMessageService>;

const usedInAnotherChat = () =>
  new ChatError(ErrorCode.conflict, 409, "this client_msg_id was already used in another chat: use a new one");

/** The answer to an edit or delete that changed nothing, as an error when it is one. */
function unchanged(outcome: Exclude<ChangeOutcome, { status: "changed" }>): Message {
  switch (outcome.status) {
    case "unchanged":
      return outcome.message;
    case "not_found":
      throw notFound("message");
    case "forbidden":
      throw new ChatError(ErrorCode.forbidden, 403, "only the sender can change a message");
    case "already_deleted":
      throw new ChatError(ErrorCode.conflict, 409, "a deleted message cannot be edited");
  }
}

/** Sending, editing, deleting and paging messages. REST and WebSocket both come through here. */
export function createMessageService({ db, reads = db, publish, sendLimiter, groupCommit }: MessageServiceDeps) {
  const batches = createGroupCommit((sends) => storeMessages(db, sends), groupCommit ?? defaultGroupCommit);

  /**
   * A send over the limit is still answered as it would be without the limit when it needs no storing:
   * 404 for a chat the sender is not in, the stored message for a repeated `client_msg_id`.
   */
  async function answerWithoutStoring(senderId: number, chatId: number, clientMsgId: string | null) {
    await requireParticipant(db, chatId, senderId);
    if (!clientMsgId) return undefined;
    const existing = await findByClientMsgId(db, senderId, clientMsgId);
    if (existing && existing.chatId !== chatId) throw usedInAnotherChat();
    return existing;
  }

  return {
    /** Stored (in one round trip, maybe with other sends) before it is answered; then published. */
    async send(senderId: number, chatId: number, content: string, clientMsgId: string | null): Promise<SendResult> {
      try {
        await storing(() => sendLimiter.consume(senderId));
      } catch (error) {
        if (!(error instanceof RateLimitedError)) throw error;
        const repeat = await storing(() => answerWithoutStoring(senderId, chatId, clientMsgId));
        if (repeat) return { message: toMessage(repeat), created: false };
        throw error;
      }
      const outcome = await storing(() => batches.submit({ senderId, chatId, content, clientMsgId })).catch(
        async (error: unknown) => {
          await sendLimiter.refund(senderId);
          throw error;
        },
      );
      if (outcome.status === "created") {
        publish(outcome.events);
        return { message: outcome.message, created: true };
      }
      // Nothing was stored: the send does not count.
      await sendLimiter.refund(senderId);
      if (outcome.status === "repeat") return { message: outcome.message, created: false };
      if (outcome.status === "conflict") throw usedInAnotherChat();
      throw notFound("chat");
    },

    async edit(userId: number, messageId: number, content: string): Promise<Message> {
      const outcome = await storing(() => editMessage(db, userId, messageId, content));
      if (outcome.status !== "changed") return unchanged(outcome);
      publish(outcome.events);
      return outcome.message;
    },

    /** Deleting a deleted message answers it again (deleting is idempotent). */
    async remove(userId: number, messageId: number): Promise<Message> {
      const outcome = await storing(() => deleteMessage(db, userId, messageId));
      if (outcome.status !== "changed") return unchanged(outcome);
      publish(outcome.events);
      return outcome.message;
    },

    /** Newest first; `has_more` tells whether older messages remain before the last one returned. */
    async page(userId: number, chatId: number, before: number | undefined, limit: number) {
      return storing(async () => {
        await requireParticipant(reads, chatId, userId);
        const rows = await pageOfMessages(reads, chatId, before, limit + 1);
        return { messages: rows.slice(0, limit).map(toMessage), has_more: rows.length > limit };
      });
    },
  };
}
