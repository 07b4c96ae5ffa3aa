import type { Chat } from "@listings-chat/shared";
import { and, desc, eq, or, sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { preparedPerDatabase } from "../db/prepared.ts";
import { executeWrite } from "../db/retry.ts";
import type { ChatRow } from "../db/rows.ts";
import { chatParticipants, chats } from "../db/schema.ts";
import { blockedError, listingClosedError, listingNotFoundError, notFound, userSuspendedError } from "../errors.ts";
import { type AddressedEvent, type AppendedRow, addressedEvents, rowsOf } from "../events/log.ts";

/** The chat, when `userId` takes part in it; otherwise the same 404 as for a chat that does not exist. */
export async function requireParticipant(db: Database, chatId: number, userId: number): Promise<ChatRow> {
  const [row] = await participantChatQuery(db).execute({ chatId, userId });
  if (!row) throw notFound("chat");
  return row.chat;
}

const participantChatQuery = preparedPerDatabase((db) =>
  db
    .select({ chat: chats })
    .from(chats)
    .innerJoin(
      chatParticipants,
      and(eq(chatParticipants.chatId, chats.id), eq(chatParticipants.userId, sql.placeholder("userId"))),
    )
    .where(eq(chats.id, sql.placeholder("chatId")))
    .prepare("lc_participant_chat"),
);

interface OpenRow extends AppendedRow {
  status: "created" | "existing" | "absent" | "blocked" | "listing_not_found" | "listing_closed" | "suspended";
  /** As this row's user sees it (the buyer's row first; `existing`: the buyer's view). */
  chat: Chat | null;
}

export interface OpenOptions {
  /** LISTINGS_REQUIRED: a listing the platform never registered gets 404 `listing_not_found`. */
  listingsRequired: boolean;
  /** False: only answer an existing chat (after the same checks); `undefined` when there is none. */
  create: boolean;
}

/**
 * The chat of (listing, buyer, seller), created with its participants and its event on first contact (with
 * `create`). Throws 404 `listing_not_found` for a registered listing's wrong seller (or, with
 * `listingsRequired`, an unregistered listing), 409 `listing_closed` for a removed one, 403 `blocked`
 * while either of the two blocks the other, and 403 `user_suspended` while the platform suspends the buyer.
 * The chat as the buyer sees it; each participant's `chat_created` with the chat as they see it.
 */
export async function openChat(
  db: Database,
  listingId: number,
  buyerId: number,
  sellerId: number,
  { listingsRequired, create }: OpenOptions,
) {
  const rows = rowsOf<OpenRow>(
    await executeWrite(
      db,
      sql`select * from lc_open_chat(${listingId}, ${buyerId}, ${sellerId}, ${listingsRequired}, ${create}, true)`,
    ),
  );
  const first = rows[0];
  if (!first) throw new Error("lc_open_chat returned no row");
  switch (first.status) {
    case "blocked":
      throw blockedError();
    case "listing_not_found":
      throw listingNotFoundError();
    case "listing_closed":
      throw listingClosedError();
    case "suspended":
      throw userSuspendedError();
    case "absent":
      return undefined;
  }
  const chat = first.chat;
  if (!chat) throw new Error(`lc_open_chat answered ${first.status} without the chat`);
  const created = first.status === "created";
  return { chat, created, events: created ? eachUsersChat(rows, "chat_created") : [] };
}

interface ChatViewRow extends AppendedRow {
  /** The chat as this row's user sees it (lc_chat_view). */
  chat: Chat | null;
}

/** A chat event for each user a row names, with the chat as that user sees it (peer and archived differ). */
export function eachUsersChat(rows: readonly ChatViewRow[], type: "chat_created" | "chat_updated"): AddressedEvent[] {
  return addressedEvents(rows, (row) => ({ type, chat: row.chat! }));
}

interface ArchiveRow extends ChatViewRow {
  status: "changed" | "unchanged" | "not_found";
}

/**
 * Archives `chatId` for `userId` (or brings it back, `archived` false), for them only (CONTRACT §8);
 * `events` is their one chat_updated, empty when it already was so.
 */
export async function archiveChat(db: Database, userId: number, chatId: number, archived: boolean) {
  const rows = rowsOf<ArchiveRow>(
    await executeWrite(db, sql`select * from lc_archive_chat(${userId}, ${chatId}, ${archived})`),
  );
  const first = rows[0];
  if (!first) throw new Error("lc_archive_chat returned no row");
  if (first.status === "not_found") throw notFound("chat");
  return { events: first.status === "changed" ? eachUsersChat(rows, "chat_updated") : [] };
}

/**
 * The body of `GET /api/v1/chats` as PostgreSQL writes it (`lc_chat_list`): `userId`'s `limit` most recently
 * active chats not archived (with `archived`: the archived ones), each with its listing, the other
 * participant's name, its newest message, their unread count and how far the other participant has read. A range scan of `chat_participants_user_activity_idx` that stops at `limit`, then key lookups.
 */
export async function chatListBody(db: Database, userId: number, limit: number, archived = false): Promise<string> {
  return textOf(await db.execute(sql`select lc_chat_list(${userId}, ${limit}, ${archived}) as body`), "lc_chat_list");
}

/**
 * The body of `GET /api/v1/chats/unread` as PostgreSQL writes it (`lc_unread`): the user's total (kept on
 * their stream row) and the counts of their `limit` most recently active chats with something unread
 * (a range scan of the partial index `chat_participants_user_unread_idx`).
 */
export async function unreadBody(db: Database, userId: number, limit: number): Promise<string> {
  return textOf(await db.execute(sql`select lc_unread(${userId}, ${limit}) as body`), "lc_unread");
}

function textOf(result: unknown, fn: string): string {
  const body = rowsOf<{ body: string | null }>(result)[0]?.body;
  if (typeof body !== "string") throw new Error(`${fn} returned no text`);
  return body;
}

interface ReadRow extends AppendedRow {
  status: "read" | "unchanged" | "chat_not_found" | "message_not_found";
  unread_count: string | number | null;
  /** When the marker moved: the commit's clock, as the event carries it. */
  read_at: string | null;
}

/**
 * Moves `userId`'s read marker in `chatId` forward to `messageId` (reading is idempotent and never goes
 * back) and counts what is left unread; `events` is empty when the marker did not move.
 */
export async function markRead(db: Database, userId: number, chatId: number, messageId: number) {
  const rows = rowsOf<ReadRow>(
    await executeWrite(db, sql`select * from lc_mark_read(${userId}, ${chatId}, ${messageId})`),
  );
  const first = rows[0];
  if (!first) throw new Error("lc_mark_read returned no row");
  if (first.status === "chat_not_found") throw notFound("chat");
  if (first.status === "message_not_found") throw notFound("message");
  const events =
    first.status === "read"
      ? addressedEvents(rows, {
          type: "message_read",
          chat_id: chatId,
          message_id: messageId,
          read_by: userId,
          read_at: first.read_at!,
        })
      : [];
  return { unread: Number(first.unread_count), events };
}

/** Both participants of the chat have written in it (CONTRACT §10: presence and typing pass between them). */
const mutual = and(eq(chats.buyerWrote, true), eq(chats.sellerWrote, true));

/**
 * Of `userId`'s `limit` most recently active chats, the other participants with whom presence is shared
 * (CONTRACT §10): both wrote in that chat and neither blocks the other. Whose presence their page is shown,
 * and who hears about theirs. Bounded, so that a seller with 100,000 chats costs what a page shows: a range
 * scan of `chat_participants_user_activity_idx` that stops at `limit`, then a key lookup of each chat and
 * two probes of the blocks' key. The filter comes after the limit, so chats where only one side wrote take
 * places in the window rather than making the scan longer.
 */
export async function recentContactsOf(db: Database, userId: number, limit: number): Promise<number[]> {
  const rows = await recentContactsQuery(db).execute({ userId, limit });
  return [...new Set(rows.map((r) => r.userId))];
}

const recentContactsQuery = preparedPerDatabase((db) => {
  const userId = sql.placeholder("userId");
  const recent = db
    .select({ chatId: chatParticipants.chatId, lastActivityAt: chatParticipants.lastActivityAt })
    .from(chatParticipants)
    .where(eq(chatParticipants.userId, userId))
    .orderBy(desc(chatParticipants.lastActivityAt), desc(chatParticipants.chatId))
    .limit(sql.placeholder("limit"))
    .as("recent");
  const other = sql<number>`case when ${chats.buyerId} = ${userId} then ${chats.sellerId} else ${chats.buyerId} end`;
  return db
    .select({ userId: other.mapWith(Number) })
    .from(recent)
    .innerJoin(chats, eq(chats.id, recent.chatId))
    .where(and(mutual, sql`not lc_blocked(${chats.buyerId}, ${chats.sellerId})`))
    .orderBy(desc(recent.lastActivityAt), desc(recent.chatId))
    .prepare("lc_recent_contacts");
});

/**
 * Whether typing and presence may pass between `userA` and `userB` in `chatId` (CONTRACT §10): they are its
 * two participants, both have written in it, and neither blocks the other. One key lookup of the chat and
 * two probes of the blocks' key.
 */
export async function sharesPresence(db: Database, chatId: number, userA: number, userB: number): Promise<boolean> {
  const rows = await sharesPresenceQuery(db).execute({ chatId, userA, userB });
  return rows.length > 0;
}

const sharesPresenceQuery = preparedPerDatabase((db) => {
  const a = sql.placeholder("userA");
  const b = sql.placeholder("userB");
  return db
    .select({ id: chats.id })
    .from(chats)
    .where(
      and(
        eq(chats.id, sql.placeholder("chatId")),
        or(and(eq(chats.buyerId, a), eq(chats.sellerId, b)), and(eq(chats.buyerId, b), eq(chats.sellerId, a))),
        mutual,
        sql`not lc_blocked(${chats.buyerId}, ${chats.sellerId})`,
      ),
    )
    .prepare("lc_shares_presence");
});
