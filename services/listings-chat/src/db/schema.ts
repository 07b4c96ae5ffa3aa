import { type ListingStatus, listingStatuses, messageKinds } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import {
  bigint,
  boolean,
  check,
  index,
  integer,
  json,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
} from "drizzle-orm/pg-core";

const createdAt = () => timestamp("created_at", { withTimezone: true, mode: "date" }).notNull().defaultNow();

/** One conversation about a listing between its buyer and its seller. */
export const chats = pgTable(
  "chats",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    listingId: bigint("listing_id", { mode: "number" }).notNull(),
    buyerId: bigint("buyer_id", { mode: "number" }).notNull(),
    sellerId: bigint("seller_id", { mode: "number" }).notNull(),
    createdAt: createdAt(),
    lastActivityAt: timestamp("last_activity_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    /** The newest message, kept by the send: "the last message of each listed chat" is one key lookup each. */
    lastMessageId: bigint("last_message_id", { mode: "number" }),
    /**
     * Whether the buyer, and the seller, have sent a message here: presence and typing pass only between two
     * people who both wrote (CONTRACT §10). Kept by the send in the update of the chat it makes anyway, so
     * they cost no row version; on the chat, not the participants, so that "my recent contacts who wrote
     * back" reads the row the contacts query joins already.
     */
    buyerWrote: boolean("buyer_wrote").notNull().default(false),
    sellerWrote: boolean("seller_wrote").notNull().default(false),
  },
  (t) => [
    uniqueIndex("chats_listing_buyer_seller_key").on(t.listingId, t.buyerId, t.sellerId),
    // "Do these two share a chat?" (a report of a user): two probes, one per role. Written only when a chat
    // is created: the columns never change, so the send's update of the chat stays HOT.
    index("chats_buyer_seller_idx").on(t.buyerId, t.sellerId),
    check("chats_buyer_is_not_seller", sql`${t.buyerId} <> ${t.sellerId}`),
  ],
);

/**
 * Who takes part in a chat. `last_activity_at` repeats the chat's so that "my chats by activity"
 * is one index range scan instead of a join and a sort. `unread_count` is kept by the statements that store
 * a message, delete one and move the read marker, so no read ever counts messages.
 */
export const chatParticipants = pgTable(
  "chat_participants",
  {
    chatId: bigint("chat_id", { mode: "number" })
      .notNull()
      .references(() => chats.id, { onDelete: "cascade" }),
    userId: bigint("user_id", { mode: "number" }).notNull(),
    role: text("role", { enum: ["buyer", "seller"] }).notNull(),
    lastReadMessageId: bigint("last_read_message_id", { mode: "number" }),
    lastActivityAt: timestamp("last_activity_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    /** Others' messages after `last_read_message_id`, not deleted. */
    unreadCount: integer("unread_count").notNull().default(0),
    /**
     * Hidden from this user's chat list (CONTRACT §8, archive) until a message from anyone else: the send
     * clears it in the update of this row it makes anyway.
     */
    archived: boolean("archived").notNull().default(false),
    /**
     * Since when this user has had an unread message here that no `notification.unread` told them of (CONTRACT
     * §9): set by the send that made the first one while webhooks are on, cleared by a read or by the
     * notification. Null for almost every row, so its partial index holds only chats waiting for a reminder.
     */
    unreadSince: timestamp("unread_since", { withTimezone: true, mode: "date" }),
    /** A `notification.unread` went out for this chat and the user has not read since: no second one. */
    unreadNotified: boolean("unread_notified").notNull().default(false),
  },
  (t) => [
    primaryKey({ columns: [t.chatId, t.userId] }),
    // The exact order of the chat list (activity, then id): a range scan that stops at the page's end.
    index("chat_participants_user_activity_idx").on(
      t.userId,
      t.lastActivityAt.desc().nullsFirst(),
      t.chatId.desc().nullsFirst(),
    ),
    // The same order over the chats with something unread: the badge's first page.
    index("chat_participants_user_unread_idx")
      .on(t.userId, t.lastActivityAt.desc().nullsFirst(), t.chatId.desc().nullsFirst())
      .where(sql`${t.unreadCount} > 0`),
    // The archived list (`?archived=1`): few rows per user, and none of the rows a send writes (a send clears
    // the flag), so it costs the write path nothing. Built CONCURRENTLY (migration 0024).
    index("chat_participants_user_archived_idx")
      .on(t.userId, t.lastActivityAt.desc().nullsFirst(), t.chatId.desc().nullsFirst())
      .where(sql`${t.archived}`),
    // The unread reminders due (lc_notify_unread): oldest first, over the few rows waiting. Built CONCURRENTLY
    // (migration 0028).
    index("chat_participants_unread_since_idx").on(t.unreadSince).where(sql`${t.unreadSince} is not null`),
    // No (user_id, chat_id) index: every user-scoped read goes through the activity index, and every send
    // updates both participants' rows, so each index here costs two entries per send.
  ],
);

/** The platform's `sender_id` in `messages`: no user has it (ids are positive); the API shows null. */
export const PLATFORM_SENDER_ID = 0;

export const messages = pgTable(
  "messages",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    chatId: bigint("chat_id", { mode: "number" })
      .notNull()
      .references(() => chats.id, { onDelete: "cascade" }),
    /**
     * `PLATFORM_SENDER_ID` (0) for a system message: then "not from this user" and "one client_msg_id per
     * sender" hold for the platform as for anyone, with no NULL in the comparisons and the unique key.
     */
    senderId: bigint("sender_id", { mode: "number" }).notNull(),
    /** `text`, `system` (the platform's, with `data`) or `image` (CONTRACT §8, §11). */
    kind: text("kind", { enum: messageKinds }).notNull().default("text"),
    content: text("content").notNull(),
    /** A system message's object (CONTRACT §8); null for the others. */
    data: jsonb("data"),
    clientMsgId: text("client_msg_id"),
    createdAt: createdAt(),
    editedAt: timestamp("edited_at", { withTimezone: true, mode: "date" }),
    deletedAt: timestamp("deleted_at", { withTimezone: true, mode: "date" }),
    /** `platform` when the platform removed it; null for a sender's delete (rows deleted before 0023 have null). */
    deletedBy: text("deleted_by", { enum: ["sender", "platform"] }),
    /** The platform's reason for removing it: for its moderators, never shown to users. */
    deleteReason: text("delete_reason"),
    /** Ids of the content rules that flagged the message (CONTRACT §10): for the platform, never shown to users. */
    flags: text("flags").array().notNull().default(sql`'{}'::text[]`),
    /**
     * An `image` message's photos as the API shows them (CONTRACT §11: id, type, size, the API paths); null for
     * the others, and once the message is deleted (its photos go with it: the `uploads` rows' sweep).
     */
    attachments: jsonb("attachments"),
  },
  (t) => [
    // The history page, newest first: read backwards, `(chat_id, id)` gives `ORDER BY id DESC` (NULLS FIRST).
    index("messages_chat_history_idx").on(t.chatId, t.id),
    uniqueIndex("messages_sender_client_msg_id_key").on(t.senderId, t.clientMsgId),
    // Added NOT VALID and validated by a later migration (0025): no scan of messages under a strong lock.
    check("messages_kind_known", sql`${t.kind} in ('text', 'system', 'image')`),
    check("messages_deleted_by_known", sql`${t.deletedBy} in ('sender', 'platform')`),
  ],
);

/**
 * Every stored change, once, whoever sees it. Its payload is what the API shows, except for the message of
 * a message event, read from `messages` as it is now (lc_stream_page; not copied here since 0006). Which
 * users see it, and under which `event_id` of theirs, is in `user_events`. `chat_id` is null for an event
 * of one user's own that belongs to no chat (`user_blocked`, `user_unblocked`: lc_append_user_event).
 *
 * Partitioned by range of `id` (migration 0021; drizzle does not describe partitions): `event_partitioning`
 * says how, lc_ensure_event_partitions adds partitions ahead of the ids in use. No foreign keys and no index
 * but the key: nothing deletes a chat or an event row by row, and nothing looks events up but by id.
 */
export const chatEvents = pgTable("chat_events", {
  id: bigint("id", { mode: "number" }).primaryKey().default(sql`nextval('chat_events_id_seq')`),
  chatId: bigint("chat_id", { mode: "number" }),
  type: text("type").notNull(),
  messageId: bigint("message_id", { mode: "number" }),
  payload: jsonb("payload").notNull(),
  createdAt: createdAt(),
});

/**
 * Each user's own event stream (CONTRACT §5): `event_id` 1, 2, 3 … per user, dense and in commit order.
 * A change seen by both participants is one `chat_events` row and one row here in each of their streams.
 * Partitioned by range of `chat_event_id`, with the bounds of `chat_events` (migration 0021). Its key holds the
 * partition key (as a partitioned table's unique index must); `(user_id, event_id)` is unique all the same,
 * since a user's event ids are handed out under the lock of their `user_streams` row. "My events after N" is a
 * range scan of the key's prefix in each partition, and needs nothing from the table.
 */
export const userEvents = pgTable(
  "user_events",
  {
    userId: bigint("user_id", { mode: "number" }).notNull(),
    eventId: bigint("event_id", { mode: "number" }).notNull(),
    chatEventId: bigint("chat_event_id", { mode: "number" }).notNull(),
  },
  (t) => [uniqueIndex("user_events_user_event_key").on(t.userId, t.eventId, t.chatEventId)],
);

/**
 * How the event tables are partitioned (one row): `width` ids per partition, `high` the upper bound of the
 * newest. lc_ensure_event_partitions adds partitions of `width` at `high` while fewer than two widths of ids
 * are left above the newest; change `width` to change the size of the partitions added from then on.
 */
export const eventPartitioning = pgTable(
  "event_partitioning",
  {
    singleton: boolean("singleton").primaryKey().notNull().default(true),
    width: bigint("width", { mode: "number" }).notNull(),
    high: bigint("high", { mode: "number" }).notNull(),
  },
  (t) => [
    check("event_partitioning_one_row", sql`${t.singleton}`),
    check("event_partitioning_width_positive", sql`${t.width} > 0`),
  ],
);

/**
 * The end of each user's stream. A writer bumps the rows of the users it appends to (in ascending user id,
 * so writers never deadlock) as the last statement of its transaction: the row lock orders one user's
 * writers by commit and a rollback gives the id back. Writes to different users never wait on one another.
 */
export const userStreams = pgTable("user_streams", {
  userId: bigint("user_id", { mode: "number" }).primaryKey(),
  lastEventId: bigint("last_event_id", { mode: "number" }).notNull(),
  /** The sum of the user's `unread_count`s, kept with them: the badge's total without reading every chat. */
  unreadTotal: bigint("unread_total", { mode: "number" }).notNull().default(0),
});

/**
 * Who blocks whom (CONTRACT §10). While either of two users blocks the other, neither can send to the other,
 * edit a message in their chats or open a chat with the other (lc_send_messages, lc_edit_message,
 * lc_open_chat). Every check asks for one pair in both directions: two probes of the key, so no index on
 * `blocked_id` is needed.
 */
export const blocks = pgTable(
  "blocks",
  {
    blockerId: bigint("blocker_id", { mode: "number" }).notNull(),
    blockedId: bigint("blocked_id", { mode: "number" }).notNull(),
    createdAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.blockerId, t.blockedId] }),
    check("blocks_not_self", sql`${t.blockerId} <> ${t.blockedId}`),
  ],
);

export const reportReasons = ["spam", "scam", "harassment", "inappropriate", "other"] as const;
export const reportTargets = ["message", "chat", "user"] as const;

/**
 * A user's report of a message, a chat or a user (CONTRACT §10): one per reporter and target. `message` is
 * the reported message as the API showed it when it was reported, kept whatever happens to it later.
 */
export const reports = pgTable(
  "reports",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    reporterId: bigint("reporter_id", { mode: "number" }).notNull(),
    reason: text("reason", { enum: reportReasons }).notNull(),
    note: text("note"),
    targetType: text("target_type", { enum: reportTargets }).notNull(),
    targetId: bigint("target_id", { mode: "number" }).notNull(),
    message: jsonb("message"),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex("reports_reporter_target_key").on(t.reporterId, t.targetType, t.targetId),
    check("reports_reason_known", sql`${t.reason} in ('spam', 'scam', 'harassment', 'inappropriate', 'other')`),
    check("reports_target_known", sql`${t.targetType} in ('message', 'chat', 'user')`),
  ],
);

/**
 * What the platform was to hear about safety before webhooks existed (`report.created`, `user.blocked`,
 * `user.unblocked`), `data` exactly the webhook's. Nothing writes here since 0027 (lc_report, lc_block_user
 * and lc_unblock_user write to `webhook_deliveries`); the sender moves the rows left into `webhook_deliveries`
 * (webhooks/outbox.ts), and a later contract migration drops the table.
 */
export const safetyEvents = pgTable("safety_events", {
  id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
  type: text("type", { enum: ["report.created", "user.blocked", "user.unblocked"] }).notNull(),
  data: jsonb("data").notNull(),
  createdAt: createdAt(),
});

export { type ListingStatus, listingStatuses };

/**
 * The listings the platform registered (CONTRACT §8, `PUT /internal/chat/listings/:id`), under the platform's
 * own id. `removed` refuses new chats and new messages in its chats (lc_open_chat, lc_send_messages: one key
 * lookup); `reserved` and `sold` are shown, not enforced. Once registered, its seller is the only one a chat
 * on it can have, whatever LISTINGS_REQUIRED says (so a change of seller is refused while it has chats).
 */
export const listings = pgTable(
  "listings",
  {
    id: bigint("id", { mode: "number" }).primaryKey(),
    sellerId: bigint("seller_id", { mode: "number" }).notNull(),
    title: text("title").notNull(),
    priceMinor: bigint("price_minor", { mode: "number" }).notNull(),
    currency: text("currency").notNull(),
    /** A listing may have no photo. */
    imageUrl: text("image_url"),
    url: text("url").notNull(),
    status: text("status", { enum: listingStatuses }).notNull(),
    createdAt: createdAt(),
    /** Moved only by a PUT that changed something: a repeated PUT answers the listing as it was. */
    updatedAt: timestamp("updated_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    /**
     * The listing as chats show it (lc_chat_listing_json), written with it by lc_put_listing: the chat list
     * embeds it as it is. Null only for a listing registered before 0023 and not yet filled by 0026.
     */
    chatJson: json("chat_json"),
  },
  (t) => [
    check("listings_status_known", sql`${t.status} in ('active', 'reserved', 'sold', 'removed')`),
    check("listings_price_not_negative", sql`${t.priceMinor} >= 0`),
  ],
);

/**
 * What chat lists show of a person (CONTRACT §8, `PUT /internal/chat/users/:id`), under the platform's user id.
 * Read with the chat list, one key lookup per chat; unknown people are shown with null names.
 */
export const people = pgTable("people", {
  userId: bigint("user_id", { mode: "number" }).primaryKey(),
  displayName: text("display_name"),
  avatarUrl: text("avatar_url"),
  /**
   * `{"id", "display_name", "avatar_url"}` as chats show the person (`peer`), written with the row: the chat
   * list embeds it as it is (a json value is output verbatim) instead of building it for every chat of a page.
   */
  peerJson: json("peer_json").notNull(),
  updatedAt: timestamp("updated_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
});

/**
 * Users the platform suspended (CONTRACT §8): while `until` is null or ahead, their sends, edits and chat opens
 * are refused (one key probe in the write functions) and their sockets are closed. Lifting deletes the row;
 * one that ran out is simply no longer in force.
 */
export const suspensions = pgTable("suspensions", {
  userId: bigint("user_id", { mode: "number" }).primaryKey(),
  until: timestamp("until", { withTimezone: true, mode: "date" }),
  reason: text("reason"),
  createdAt: createdAt(),
});

/**
 * Listings whose change still has to reach their chats as `chat_updated` (CONTRACT §8), written in the
 * transaction of the change: a batch of chats at a time, by any instance (`FOR UPDATE SKIP LOCKED`, oldest
 * first), resumed after a crash. `after_buyer_id` is the last chat told (a registered listing's chats all have
 * its seller, so they are ordered by buyer along chats_listing_buyer_seller_key). A change during a pass sets
 * `rerun`: the pass goes on to the end (the chats after the cursor hear the newest state), then starts once more
 * from the first chat, so a listing that changes often still reaches all its chats.
 */
export const listingFanouts = pgTable(
  "listing_fanouts",
  {
    listingId: bigint("listing_id", { mode: "number" }).primaryKey(),
    afterBuyerId: bigint("after_buyer_id", { mode: "number" }).notNull().default(0),
    rerun: boolean("rerun").notNull().default(false),
    requestedAt: timestamp("requested_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  },
  // The queue's order: a step reads the oldest, not a sort of every fan-out waiting.
  (t) => [index("listing_fanouts_requested_idx").on(t.requestedAt, t.listingId)],
);

/**
 * The webhooks' outbox and queue (CONTRACT §9): a row per change to report, written in the transaction of the
 * change by the write functions (only while some instance sends webhooks: `webhook_lease`), `data` exactly the
 * webhook's. Any instance claims due rows (`FOR UPDATE SKIP LOCKED`) and leases them by moving
 * `next_attempt_at` past its time-out, so each is sent by one instance at a time; a 2xx sets `delivered_at`,
 * a failure the next attempt's time, and one past `WEBHOOK_MAX_AGE_S` since `retry_from` sets `dead_at`.
 * `next_attempt_at` is null exactly when the row is delivered or dead. Its `webhook-id` is `msg_<id>`.
 */
export const webhookDeliveries = pgTable(
  "webhook_deliveries",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    type: text("type").notNull(),
    data: jsonb("data").notNull(),
    createdAt: createdAt(),
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true, mode: "date" }).defaultNow(),
    attempts: integer("attempts").notNull().default(0),
    lastError: text("last_error"),
    /** Where WEBHOOK_MAX_AGE_S counts from: the record, or the operator's retry of a dead delivery. */
    retryFrom: timestamp("retry_from", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    deliveredAt: timestamp("delivered_at", { withTimezone: true, mode: "date" }),
    deadAt: timestamp("dead_at", { withTimezone: true, mode: "date" }),
  },
  (t) => [
    // The queue: due rows, oldest due first; delivered and dead rows are not in it.
    index("webhook_deliveries_due_idx").on(t.nextAttemptAt).where(sql`${t.nextAttemptAt} is not null`),
    // The dead list and its retry.
    index("webhook_deliveries_dead_idx").on(t.id).where(sql`${t.deadAt} is not null`),
  ],
);

/**
 * Whether the write functions record webhooks (lc_webhooks_on): `until` is pushed forward by every instance
 * that has WEBHOOK_URL, every 30 s, to 10 minutes ahead. A setting in the database rather than in each session,
 * because sessions may come through a transaction pooler (no session state), and because every instance's
 * writes must record while any instance sends, whatever its own configuration.
 */
export const webhookLease = pgTable(
  "webhook_lease",
  {
    singleton: boolean("singleton").primaryKey().default(true),
    until: timestamp("until", { withTimezone: true, mode: "date" }).notNull(),
  },
  (t) => [check("webhook_lease_one_row", sql`${t.singleton}`)],
);

/**
 * A photo, from the presigned upload to its deletion (CONTRACT §11; media/uploads.ts). The storage holds up to
 * three objects per row, named by its id (media/storage.ts `objectKeys`): the bytes as uploaded (removed once
 * they are processed), the stripped photo and its thumbnail. `sweep_after` says when the sweeper removes the
 * objects and then the row: 24 h after the upload while it is not attached, null while its message lives, and
 * the moment its message is deleted (the trigger of migration 0029).
 */
export const uploads = pgTable(
  "uploads",
  {
    /** Random and unguessable (128 bits): the `upload_id`, then the attachment's id. */
    id: text("id").primaryKey(),
    userId: bigint("user_id", { mode: "number" }).notNull(),
    /** What the uploader declared, bound into the presigned PUT: the storage refuses any other. */
    contentType: text("content_type").notNull(),
    declaredSize: integer("declared_size").notNull(),
    createdAt: createdAt(),
    /** Set when the bytes were checked, stripped and thumbnailed (the processed objects exist). */
    processedAt: timestamp("processed_at", { withTimezone: true, mode: "date" }),
    width: integer("width"),
    height: integer("height"),
    /** The stripped photo's bytes. */
    storedSize: integer("stored_size"),
    /** Why its bytes were refused (not the image it claims, undecodable): a later send is refused at once. */
    rejection: text("rejection"),
    /** The message it belongs to, once sent. */
    messageId: bigint("message_id", { mode: "number" }),
    sweepAfter: timestamp("sweep_after", { withTimezone: true, mode: "date" }),
    /**
     * When the original's key is to be removed once more: the end of the presigned PUT's window, set as the
     * upload is processed (its original removed then). Whoever holds the URL could PUT the bytes again until then.
     */
    originalRecheckAt: timestamp("original_recheck_at", { withTimezone: true, mode: "date" }),
  },
  (t) => [
    // The sweeper's queue: rows due, oldest first; attached rows of live messages are not in it.
    index("uploads_sweep_idx").on(t.sweepAfter).where(sql`${t.sweepAfter} is not null`),
    // The sweeper's second queue: originals to remove once more, from uploads processed in the last minutes.
    index("uploads_original_recheck_idx").on(t.originalRecheckAt).where(sql`${t.originalRecheckAt} is not null`),
    // A deleted message's photos (the trigger), and a person's uploads (CONTRACT §12).
    index("uploads_message_idx").on(t.messageId).where(sql`${t.messageId} is not null`),
    index("uploads_user_idx").on(t.userId),
  ],
);

/**
 * A person's erasure (CONTRACT §12, `DELETE /internal/chat/users/:id`), from the request to `user.erased`: any
 * instance works it a batch per transaction (lc_erasure_step), taking the row `FOR UPDATE SKIP LOCKED`, so that
 * one erasure is worked by one instance at a time and one that died half-way is taken up where its last committed
 * batch left it. `step` says what is left: `start` (list the chats, remove the name, blocks and reports),
 * `messages` (the chats in `erasure_chats`), `streams` (their own event stream), `webhooks` (copies in the
 * outbox, after the id in `cursor`), `uploads` (their photos, removed by the sweeper), `done`.
 */
export const erasures = pgTable(
  "erasures",
  {
    userId: bigint("user_id", { mode: "number" }).primaryKey(),
    requestedAt: timestamp("requested_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
    step: text("step", { enum: ["start", "messages", "streams", "webhooks", "uploads", "done"] })
      .notNull()
      .default("start"),
    cursor: bigint("cursor", { mode: "number" }).notNull().default(0),
    /**
     * When the first step ran (clock time): after the request was visible to every session, so a write that ran
     * its suspension check without seeing it began before this. The last step waits for such writes to end.
     */
    listedAt: timestamp("listed_at", { withTimezone: true, mode: "date" }),
    completedAt: timestamp("completed_at", { withTimezone: true, mode: "date" }),
  },
  (t) => [
    // The erasures under way, oldest first: the few rows an instance looks at when it polls.
    index("erasures_pending_idx").on(t.requestedAt).where(sql`${t.completedAt} is null`),
    check("erasures_step_known", sql`${t.step} in ('start', 'messages', 'streams', 'webhooks', 'uploads', 'done')`),
  ],
);

/**
 * The chats of a person being erased whose messages are still to be erased (listed by the erasure's first
 * step), each with the last message id done: the erasure's cursor, so a chat with 100,000 of their messages is
 * erased a batch at a time and resumed where the last committed batch stopped.
 */
export const erasureChats = pgTable(
  "erasure_chats",
  {
    userId: bigint("user_id", { mode: "number" }).notNull(),
    chatId: bigint("chat_id", { mode: "number" }).notNull(),
    afterMessageId: bigint("after_message_id", { mode: "number" }).notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.userId, t.chatId] })],
);

/**
 * Jobs that one instance of many runs on a schedule (MESSAGE_RETENTION_DAYS): an instance takes a run by moving
 * `next_run_at` forward in a conditional UPDATE, so two instances never run the same one.
 */
export const scheduledJobs = pgTable("scheduled_jobs", {
  name: text("name").primaryKey(),
  nextRunAt: timestamp("next_run_at", { withTimezone: true, mode: "date" }).notNull().defaultNow(),
  lastStartedAt: timestamp("last_started_at", { withTimezone: true, mode: "date" }),
  lastFinishedAt: timestamp("last_finished_at", { withTimezone: true, mode: "date" }),
  /** What the last run did, for the ops endpoint and the logs: counts, never content. */
  lastResult: jsonb("last_result"),
});
