import type { Attachment, Message } from "@listings-chat/shared";
import { and, desc, eq, lt, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { executeWrite } from "../db/retry.ts";
import { messages } from "../db/schema.ts";
import { type AddressedEvent, type AppendedRow, addressedEvents, rowsOf } from "../events/log.ts";

export async function findByClientMsgId(db: Database, senderId: number, clientMsgId: string) {
  const [row] = await db
    .select()
    .from(messages)
    .where(and(eq(messages.senderId, senderId), eq(messages.clientMsgId, clientMsgId)));
  return row;
}

/** A page of a chat's messages, newest first, strictly older than `before` when given. */
export async function pageOfMessages(db: Database, chatId: number, before: number | undefined, limit: number) {
  return db
    .select()
    .from(messages)
    .where(and(eq(messages.chatId, chatId), before ? lt(messages.id, before) : undefined))
    .orderBy(desc(messages.id))
    .limit(limit);
}

export interface SendRequest {
  senderId: number;
  chatId: number;
  content: string;
  clientMsgId: string | null;
  /** Ids of the content rules that flagged it (stored, never shown to users); none when absent. */
  flags?: readonly string[];
  /** The photos (CONTRACT §11), checked and processed (media/uploads.ts); the message is then `kind` image. */
  attachments?: readonly Attachment[];
}

/** What became of one send of a batch (see `lc_send_messages`). */
export type SendOutcome =
  | {
      status: "created";
      message: Message;
      events: AddressedEvent[];
      /** This send made both participants writers for the first time: presence and typing may pass now. */
      becameMutual: boolean;
    }
  /** The sender stored this `client_msg_id` in this chat before: the message stored then. */
  | { status: "repeat"; message: Message }
  /** The sender used this `client_msg_id` in another chat. */
  | { status: "conflict" }
  /** No such chat, or the sender does not take part in it. */
  | { status: "not_found" }
  /** Either participant blocks the other (CONTRACT §10): nothing stored. */
  | { status: "blocked" }
  /** The chat's listing is registered as `removed` (CONTRACT §8): nothing stored. */
  | { status: "listing_closed" }
  /** The platform suspended the sender (CONTRACT §8): nothing stored. */
  | { status: "suspended" }
  /** An upload was taken meanwhile (by another send) or expired: nothing stored. */
  | { status: "attachment_invalid" };

interface SendRow extends AppendedRow {
  ord: string | number;
  status: SendOutcome["status"];
  message: Message | null;
  became_mutual: boolean | null;
}

/**
 * Stores a batch of sends in one round trip and one transaction; a bad send does not fail the others.
 * The outcomes are in the order of `sends`.
 */
export async function storeMessages(db: Database, sends: readonly SendRequest[]): Promise<SendOutcome[]> {
  // No flags as null, not []: the function then builds no array for the (usual) send without flags.
  const batch = JSON.stringify(
    sends.map((s) => {
      const send = [s.senderId, s.chatId, s.content, s.clientMsgId, s.flags?.length ? s.flags : null];
      return s.attachments?.length ? [...send, s.attachments] : send;
    }),
  );
  const rows = rowsOf<SendRow>(await executeWrite(db, sql`select * from lc_send_messages(${batch}::jsonb, true)`));
  const byOrd = new Map<number, SendRow[]>();
  for (const row of rows) {
    const ord = Number(row.ord);
    byOrd.set(ord, [...(byOrd.get(ord) ?? []), row]);
  }
  return sends.map((send, i) => {
    const mine = byOrd.get(i + 1);
    const first = mine?.[0];
    if (!mine || !first) throw new Error(`lc_send_messages returned nothing for send ${i + 1} of ${sends.length}`);
    switch (first.status) {
      case "created": {
        const message = first.message!;
        return {
          status: "created",
          message,
          events: addressedEvents(mine, { type: "new_message", chat_id: send.chatId, message }),
          becameMutual: first.became_mutual === true,
        };
      }
      case "repeat":
        return { status: "repeat", message: first.message! };
      default:
        return { status: first.status };
    }
  });
}

/** What became of an edit or a delete (see `lc_edit_message`, `lc_delete_message`). */
export type ChangeOutcome =
  | { status: "changed"; message: Message; events: AddressedEvent[] }
  /** A delete of a message already deleted: the message as it is. */
  | { status: "unchanged"; message: Message }
  /** No such message, or the user does not take part in its chat. */
  | { status: "not_found" }
  /** Only the sender can change a message. */
  | { status: "forbidden" }
  /** A deleted message cannot be edited. */
  | { status: "already_deleted" }
  /** An edit while either participant blocks the other (CONTRACT §10). */
  | { status: "blocked" }
  /** An edit while the platform suspends the user (CONTRACT §8). */
  | { status: "suspended" };

interface ChangeRow extends AppendedRow {
  status: "edited" | "deleted" | "unchanged" | "not_found" | "forbidden" | "already_deleted" | "blocked" | "suspended";
  message: Message | null;
}

function changeOutcome(rows: ChangeRow[], type: "message_edited" | "message_deleted"): ChangeOutcome {
  const first = rows[0];
  if (!first) throw new Error(`the ${type} function returned no row`);
  if (first.status === "edited" || first.status === "deleted") {
    const message = first.message!;
    return { status: "changed", message, events: addressedEvents(rows, { type, chat_id: message.chat_id, message }) };
  }
  if (first.status === "unchanged") return { status: "unchanged", message: first.message! };
  return { status: first.status };
}

/** Edits the message; `flags` replaces the content rules' flags of the old content. */
export async function editMessage(
  db: Database,
  userId: number,
  messageId: number,
  content: string,
  flags: readonly string[] = [],
) {
  const result = await executeWrite(
    db,
    // sql.param: one text[] parameter (drizzle would spread a bare array into a list of parameters).
    sql`select * from lc_edit_message(${userId}, ${messageId}, ${content}, ${sql.param([...flags])}::text[], true)`,
  );
  return changeOutcome(rowsOf<ChangeRow>(result), "message_edited");
}

/** Marks the message deleted: no API shows its content again (events are read with the row, migration 0006). */
export async function deleteMessage(db: Database, userId: number, messageId: number) {
  const result = await executeWrite(db, sql`select * from lc_delete_message(${userId}, ${messageId})`);
  return changeOutcome(rowsOf<ChangeRow>(result), "message_deleted");
}

/** The platform removes the message (CONTRACT §8): `deleted_by` platform, `reason` kept for its moderators. */
export async function deleteMessageAsPlatform(db: Database, messageId: number, reason: string | null) {
  const result = await executeWrite(db, sql`select * from lc_platform_delete_message(${messageId}, ${reason})`);
  return changeOutcome(rowsOf<ChangeRow>(result), "message_deleted");
}

/** What became of a system message (see `lc_post_system_message`). */
export type SystemMessageOutcome =
  | { status: "created"; message: Message; events: AddressedEvent[] }
  | { status: "repeat"; message: Message }
  | { status: "conflict" }
  | { status: "not_found" };

interface SystemMessageRow extends AppendedRow {
  status: SystemMessageOutcome["status"];
  message: Message | null;
}

/** The platform's message in a chat (`kind` system), told to both participants. */
export async function storeSystemMessage(
  db: Database,
  chatId: number,
  content: string,
  data: Record<string, unknown> | null,
  clientMsgId: string | null,
): Promise<SystemMessageOutcome> {
  const rows = rowsOf<SystemMessageRow>(
    await executeWrite(
      db,
      sql`select * from lc_post_system_message(${chatId}, ${content}, ${data === null ? null : JSON.stringify(data)}::jsonb, ${clientMsgId})`,
    ),
  );
  const first = rows[0];
  if (!first) throw new Error("lc_post_system_message returned no row");
  if (first.status === "created") {
    const message = first.message!;
    return {
      status: "created",
      message,
      events: addressedEvents(rows, { type: "new_message", chat_id: chatId, message }),
    };
  }
  if (first.status === "repeat") return { status: "repeat", message: first.message! };
  return { status: first.status };
}
