import type { Attachment, Message } from "@listings-chat/shared";
import { ErrorCode } from "@listings-chat/shared";
import { requireParticipant } from "../chats/repository.ts";
import type { Database } from "../db/client.ts";
import { toMessage } from "../db/rows.ts";
import {
  blockedError,
  ChatError,
  listingClosedError,
  notFound,
  RateLimitedError,
  storing,
  userSuspendedError,
} from "../errors.ts";
import type { PublishEvent } from "../events/publisher.ts";
import { createRateLimiter, keptIfStored, type LimitedWrite, type RateLimiter } from "../limits/rate-limiter.ts";
import type { MediaService } from "../media/uploads.ts";
import { type ContentRules, createContentRules, defaultContentRulesOptions } from "../safety/content-rules.ts";
import { createGroupCommit, defaultGroupCommit, type GroupCommitOptions } from "./group-commit.ts";
import {
  type ChangeOutcome,
  deleteMessage,
  editMessage,
  findByClientMsgId,
  pageOfMessages,
  type SendOutcome,
  storeMessages,
} from "./repository.ts";

export interface MessageServiceDeps {
  db: Database;
  /** The pool of page reads (message pages); `db` when there is one pool. */
  reads?: Database;
  publish: PublishEvent;
  /** Sends, and edits and deletes, per user; the contract's limits, counted in this process, when not given. */
  limits?: RateLimiter;
  /** Applied to every send and edit before it is stored (CONTRACT §10); the shipped rules when not given. */
  contentRules?: ContentRules;
  groupCommit?: GroupCommitOptions;
  /** Photos (CONTRACT §11): checks and processes a send's uploads. Without it, a send with attachments gets 422. */
  media?: MediaService;
  /** After a message is deleted: its photos (if any) are due for the sweeper (media/sweeper.ts). */
  onMessageDeleted?: () => void;
  /**
   * Told after the commit of a send that made its chat's two participants contacts (both have written):
   * from then on they share presence and typing (CONTRACT §10), without a reconnect.
   */
  onContacts?: (userA: number, userB: number) => void;
}

export interface SendResult {
  message: Message;
  /** False when this `client_msg_id` was already stored: the same message is returned again. */
  created: boolean;
  /** This send made both participants writers for the first time (CONTRACT §10: presence and typing from now). */
  becameMutual?: boolean;
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
      throw new ChatError(
        ErrorCode.forbidden,
        403,
        "only the sender can change a message (a system message is the platform's)",
      );
    case "already_deleted":
      throw new ChatError(ErrorCode.conflict, 409, "a deleted message cannot be edited");
    case "blocked":
      throw blockedError();
    case "suspended":
      throw userSuspendedError();
  }
}

/**
 * The content rules' verdict on a text: what to store and its flags, or 422 `content_rejected` naming the
 * rule. A rejected text is refused before any limit counts it, as a text too long is.
 */
function screened(rules: ContentRules, text: string): { content: string; flags: string[] } {
  const { content, flags, rejectedBy } = rules.evaluate(text);
  if (rejectedBy !== undefined) {
    throw new ChatError(
      ErrorCode.contentRejected,
      422,
      `the message breaks the content rule "${rejectedBy}": change it and send it again`,
    );
  }
  return { content, flags };
}

/** Sending, editing, deleting and paging messages. REST and WebSocket both come through here. */
export function createMessageService({
  db,
  reads = db,
  publish,
  limits = createRateLimiter(),
  contentRules = createContentRules(defaultContentRulesOptions),
  groupCommit,
  media,
  onMessageDeleted,
  onContacts,
}: MessageServiceDeps) {
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

  /**
   * A change counted in `write`'s bucket before it is stored; given back when it changed nothing (a delete
   * of a deleted message, a refusal) or could not be stored, as a send that stores nothing is.
   */
  async function counted(write: LimitedWrite, userId: number, change: () => Promise<ChangeOutcome>) {
    await storing(() => limits.consume(write, userId));
    return keptIfStored(
      limits,
      write,
      userId,
      () => storing(change),
      (outcome) => outcome.status === "changed",
    );
  }

  /**
   * A photo send's attachments, checked and processed (media/uploads.ts), or, for a retry of a send stored
   * before, its outcome: the photos are not read and processed again. Only a participant's photos are processed.
   */
  async function photosOf(
    senderId: number,
    chatId: number,
    clientMsgId: string | null,
    uploadIds: readonly string[],
  ): Promise<Attachment[] | SendOutcome> {
    const repeat = await storing(() => answerWithoutStoring(senderId, chatId, clientMsgId));
    if (repeat) return { status: "repeat", message: toMessage(repeat) };
    if (!media) {
      // Not the photos' fault: another instance may take them (a rollout, a mixed configuration).
      throw new ChatError(ErrorCode.storageUnavailable, 503, "photos are off on this instance: STORAGE is not set");
    }
    try {
      return await media.attachmentsFor(senderId, uploadIds);
    } catch (error) {
      // A retry that met its own first attempt half-way (the photos taken by the send that is now stored) is
      // that send's repeat, not a refusal.
      if (!(error instanceof ChatError && error.code === ErrorCode.attachmentInvalid)) throw error;
      const stored = await storing(() => answerWithoutStoring(senderId, chatId, clientMsgId));
      if (stored) return { status: "repeat", message: toMessage(stored) };
      throw error;
    }
  }

  return {
    /** Stored (in one round trip, maybe with other sends) before it is answered; then published. */
    async send(
      senderId: number,
      chatId: number,
      text: string,
      clientMsgId: string | null,
      uploadIds: readonly string[] = [],
    ): Promise<SendResult> {
      const { content, flags } = screened(contentRules, text);
      try {
        await storing(() => limits.consume("send", senderId));
      } catch (error) {
        if (!(error instanceof RateLimitedError)) throw error;
        const repeat = await storing(() => answerWithoutStoring(senderId, chatId, clientMsgId));
        if (repeat) return { message: toMessage(repeat), created: false };
        throw error;
      }
      // Nothing stored (a repeat, a refusal, a failure): the send does not count.
      const outcome = await keptIfStored(
        limits,
        "send",
        senderId,
        async () => {
          const attachments = uploadIds.length > 0 ? await photosOf(senderId, chatId, clientMsgId, uploadIds) : [];
          if (!Array.isArray(attachments)) return attachments;
          return storing(() => batches.submit({ senderId, chatId, content, clientMsgId, flags, attachments }));
        },
        (stored) => stored.status === "created",
      );
      if (outcome.status === "created") {
        publish(outcome.events);
        const [userA, userB] = outcome.events.map((e) => e.userId);
        if (outcome.becameMutual && userA !== undefined && userB !== undefined) onContacts?.(userA, userB);
        return { message: outcome.message, created: true, becameMutual: outcome.becameMutual };
      }
      if (outcome.status === "repeat") return { message: outcome.message, created: false };
      if (outcome.status === "conflict") throw usedInAnotherChat();
      if (outcome.status === "blocked") throw blockedError();
      if (outcome.status === "listing_closed") throw listingClosedError();
      if (outcome.status === "suspended") throw userSuspendedError();
      if (outcome.status === "attachment_invalid") {
        throw new ChatError(
          ErrorCode.attachmentInvalid,
          422,
          "a photo was sent with another message or expired meanwhile: upload it again",
        );
      }
      throw notFound("chat");
    },

    /** Counted with deletes (EDIT_LIMIT_PER_MINUTE). */
    async edit(userId: number, messageId: number, text: string): Promise<Message> {
      const { content, flags } = screened(contentRules, text);
      const outcome = await counted("edit", userId, () => editMessage(db, userId, messageId, content, flags));
      if (outcome.status !== "changed") return unchanged(outcome);
      publish(outcome.events);
      return outcome.message;
    },

    /** Deleting a deleted message answers it again (deleting is idempotent), and does not count. */
    async remove(userId: number, messageId: number): Promise<Message> {
      const outcome = await counted("edit", userId, () => deleteMessage(db, userId, messageId));
      if (outcome.status !== "changed") return unchanged(outcome);
      publish(outcome.events);
      onMessageDeleted?.();
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
