import { randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ChatEvent, ErrorCode, type Message } from "@listings-chat/shared";
import { and, eq, type SQL, sql } from "drizzle-orm";
import { getTableConfig } from "drizzle-orm/pg-core";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type ChatService, createChatService } from "../src/chats/service.ts";
import {
  type Database,
  type DatabaseHandle,
  type DatabaseOptions,
  migrationsFolder,
  openDatabase,
} from "../src/db/client.ts";
import * as schema from "../src/db/schema.ts";
import { ChatError, RateLimitedError } from "../src/errors.ts";
import { type AddressedEvent, lastEventId, readEventRange, readStreamPage } from "../src/events/log.ts";
import type { PublishEvent } from "../src/events/publisher.ts";
import { createRateLimiter } from "../src/limits/rate-limiter.ts";
import { storeMessages } from "../src/messages/repository.ts";
import { createMessageService, type MessageService } from "../src/messages/service.ts";
import { databaseTargets } from "./support/databases.ts";

/** Up to `limit` events of `userId`'s stream after `after`, whatever their bytes. */
const eventsOf = async (db: Database, userId: number, after: number, limit: number) =>
  (await readStreamPage(db, userId, after, { maxEvents: limit, maxBytes: 2 ** 31 - 1 })).events;

/** The migrations in drizzle/ (its journal): what a migrated database has applied, each once. */
const committedMigrations = (
  JSON.parse(readFileSync(join(migrationsFolder, "meta", "_journal.json"), "utf8")) as { entries: unknown[] }
).entries.length;
/** The function sources in drizzle/functions/, one a function name: applied after them, each recorded once. */
const functionFiles = readdirSync(join(migrationsFolder, "functions")).filter((f) => f.endsWith(".sql")).length;

const tables = {
  chats: schema.chats,
  chat_participants: schema.chatParticipants,
  messages: schema.messages,
  chat_events: schema.chatEvents,
  user_events: schema.userEvents,
  user_streams: schema.userStreams,
  blocks: schema.blocks,
  reports: schema.reports,
  safety_events: schema.safetyEvents,
  listings: schema.listings,
  event_partitioning: schema.eventPartitioning,
  people: schema.people,
  suspensions: schema.suspensions,
  listing_fanouts: schema.listingFanouts,
  webhook_deliveries: schema.webhookDeliveries,
  webhook_lease: schema.webhookLease,
  uploads: schema.uploads,
  erasures: schema.erasures,
  erasure_chats: schema.erasureChats,
  scheduled_jobs: schema.scheduledJobs,
};

/** Raw SQL rows, the same on PGlite and node-postgres (cast bigints in SQL: drivers differ on them). */
async function rows<T>(db: Database, query: SQL): Promise<T[]> {
  const result = await db.execute(query);
  return (result as unknown as { rows: T[] }).rows;
}

/** The ChatError `work` must fail with. */
async function chatError(work: Promise<unknown>): Promise<ChatError> {
  try {
    await work;
  } catch (error) {
    expect(error).toBeInstanceOf(ChatError);
    return error as ChatError;
  }
  throw new Error("expected a ChatError, but the call succeeded");
}

async function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms (deadlock?)`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A `publish` spy that also checks "store, then tell": for every event it is handed, it reads that
 * event back through the pool (another connection on PostgreSQL). Only a committed event is found.
 */
function createRecorder(getDb: () => Database) {
  const visible: Promise<{ published: AddressedEvent; found: AddressedEvent[] }>[] = [];
  const publish = vi.fn<PublishEvent>((events) => {
    for (const published of events) {
      const id = published.event.event_id;
      visible.push(
        readEventRange(getDb(), published.userId, id - 1, id).then(({ events: found }) => ({ published, found })),
      );
    }
  });
  return {
    publish,
    /** Each event published so far, one per user it was for, in publish order. */
    published: () => publish.mock.calls.flatMap(([events]) => events),
    /** Every event published so far was already committed when it was published. */
    async expectAllCommitted() {
      for (const { published, found } of await Promise.all(visible.splice(0))) {
        expect(
          found,
          `event ${published.event.event_id} of user ${published.userId} was not committed when published`,
        ).toHaveLength(1);
        const stored = found[0]!.event;
        const sent = published.event;
        // A message's events are read with the message as it is now: an edit or a delete that committed after
        // the publish shows in them. Only that may differ, and only forward: a later edit, or a deletion.
        if ("message" in sent && "message" in stored && stored.message.id === sent.message.id) {
          const now = stored.message;
          const later =
            (now.edited_at ?? "") >= (sent.message.edited_at ?? "") &&
            (sent.message.deleted_at === null || now.deleted_at === sent.message.deleted_at);
          expect(later, `event ${sent.event_id}: the stored message went back in time`).toBe(true);
          const { content, edited_at, deleted_at } = now;
          // A delete after the publish also says who deleted it, and takes a system message's data with it.
          const deletedSince = deleted_at !== sent.message.deleted_at;
          const deletion = deletedSince ? { deleted_by: now.deleted_by, data: now.data } : {};
          expect(stored).toEqual({
            ...sent,
            message: { ...sent.message, content, edited_at, deleted_at, ...deletion },
          });
          if (deleted_at !== null) expect([content, now.data]).toEqual(["", null]);
          if (deletedSince) expect(["sender", "platform"]).toContain(now.deleted_by);
        } else {
          expect(stored).toEqual(sent);
        }
      }
    },
  };
}

describe.each(databaseTargets())("data layer on $name", (target) => {
  let handle: DatabaseHandle;
  let db: Database;
  let options: DatabaseOptions;
  let drop: () => Promise<void> = async () => {};
  const recorder = createRecorder(() => db);
  const publish = recorder.publish;
  let chats: ChatService;
  let messages: MessageService;

  // Each test uses users and listings of its own, so tests do not see each other's chats.
  let nextId = 1_000;
  const newId = () => nextId++;

  beforeAll(async () => {
    const created = await target.create();
    drop = created.drop;
    options = created.options;
    handle = await openDatabase(options);
    db = handle.db;
    chats = createChatService({ db, publish });
    messages = createMessageService({ db, publish, limits: createRateLimiter({ limits: { send: 100_000 } }) });
  });

  afterAll(async () => {
    await handle?.close();
    await drop();
  });

  /** The users the last change was published to, lowest id first; and a pair in that order. */
  const lastAudience = () =>
    recorder
      .published()
      .slice(-2)
      .map((p) => p.userId);
  const pair = (a: number, b: number) => [a, b].sort((x, y) => x - y);

  /** The end of every user's stream in this database. */
  async function streamEnds(): Promise<Map<number, number>> {
    const all = await db.select().from(schema.userStreams);
    return new Map(all.map((row) => [row.userId, row.lastEventId]));
  }

  /**
   * Runs `work` and checks what it appended: exactly `types`, in order, at the end of the streams of the
   * chat's two participants (and of no one else), numbered on from where each stream was, each published
   * once per user and only after its commit. Answers the events as the first of them (lowest id) sees them.
   */
  async function expectEvents<T>(
    types: ChatEvent["type"][],
    work: () => Promise<T>,
  ): Promise<{ result: T; events: ChatEvent[]; users: number[] }> {
    const before = await streamEnds();
    const publishedBefore = recorder.published().length;
    const result = await work();
    const after = await streamEnds();
    const changed = [...after].filter(([userId, end]) => end !== (before.get(userId) ?? 0)).sort(([a], [b]) => a - b);
    expect(changed, "the streams that changed").toHaveLength(2);
    const logged: AddressedEvent[] = [];
    for (const [userId, end] of changed) {
      const from = before.get(userId) ?? 0;
      const { events } = await readEventRange(db, userId, from, end);
      expect(events.map((e) => e.event.type)).toEqual(types);
      expect(events.map((e) => e.event.event_id)).toEqual(types.map((_, i) => from + 1 + i));
      logged.push(...events);
    }
    const byUserThenId = (a: AddressedEvent, b: AddressedEvent) =>
      a.userId - b.userId || a.event.event_id - b.event.event_id;
    const published = recorder.published().slice(publishedBefore);
    expect([...published].sort(byUserThenId)).toEqual([...logged].sort(byUserThenId));
    await recorder.expectAllCommitted();
    const first = changed[0]![0];
    return {
      result,
      events: logged.filter((e) => e.userId === first).map((e) => e.event),
      users: changed.map(([userId]) => userId),
    };
  }

  /** Runs `work` and checks that it appended and published nothing. */
  async function expectNoEvents<T>(work: () => Promise<T>): Promise<T> {
    const before = await streamEnds();
    const publishedBefore = publish.mock.calls.length;
    const result = await work();
    expect(await streamEnds()).toEqual(before);
    expect(publish.mock.calls.length).toBe(publishedBefore);
    return result;
  }

  /** A new chat between a fresh buyer and seller. */
  async function newChat() {
    const buyer = newId();
    const seller = newId();
    const { chat } = await chats.open(buyer, newId(), seller);
    return { chat, buyer, seller };
  }

  async function messageRow(id: number) {
    const [row] = await db.select().from(schema.messages).where(eq(schema.messages.id, id));
    return row;
  }

  describe("migrations", () => {
    it("bring a fresh database to the schema of schema.ts", async () => {
      const publicTables = await rows<{ name: string }>(
        db,
        // The event tables' partitions (0021) are tables of their own, but not of schema.ts.
        sql`select c.relname::text as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition order by 1`,
      );
      expect(publicTables.map((t) => t.name)).toEqual(Object.keys(tables).sort());

      for (const [name, table] of Object.entries(tables)) {
        const config = getTableConfig(table);
        expect(config.name).toBe(name);
        const columns = await rows<{ name: string; type: string; nullable: string }>(
          db,
          // An array's data_type is "ARRAY"; its element type is its udt_name without the leading "_".
          sql`select column_name::text as name, is_nullable::text as nullable,
                case when data_type = 'ARRAY' then substr(udt_name::text, 2) || '[]' else data_type::text end as type
              from information_schema.columns where table_schema = 'public' and table_name = ${name}`,
        );
        const actual = Object.fromEntries(columns.map((c) => [c.name, { type: c.type, notNull: c.nullable === "NO" }]));
        const expected = Object.fromEntries(
          config.columns.map((c) => [c.name, { type: c.getSQLType(), notNull: c.notNull || c.primary }]),
        );
        expect(actual, `columns of ${name}`).toEqual(expected);
      }
    });

    it("create every index, check and foreign key that schema.ts names", async () => {
      const indexes = await rows<{ name: string; def: string }>(
        db,
        sql`select indexname::text as name, indexdef::text as def from pg_indexes where schemaname = 'public'`,
      );
      const byName = new Map(indexes.map((i) => [i.name, i.def]));
      const expected = Object.values(tables).flatMap((t) => getTableConfig(t).indexes.map((i) => i.config));
      expect(expected.map((i) => i.name).sort()).toEqual([
        "chat_participants_unread_since_idx",
        "chat_participants_user_activity_idx",
        "chat_participants_user_archived_idx",
        "chat_participants_user_unread_idx",
        "chats_buyer_seller_idx",
        "chats_listing_buyer_seller_key",
        "erasures_pending_idx",
        "listing_fanouts_requested_idx",
        "messages_chat_history_idx",
        "messages_sender_client_msg_id_key",
        "reports_reporter_target_key",
        "uploads_message_idx",
        "uploads_original_recheck_idx",
        "uploads_sweep_idx",
        "uploads_user_idx",
        "user_events_user_event_key",
        "webhook_deliveries_dead_idx",
        "webhook_deliveries_due_idx",
      ]);
      for (const index of expected) {
        const def = byName.get(index.name!);
        expect(def, `index ${index.name}`).toBeDefined();
        expect(def!.startsWith("CREATE UNIQUE INDEX"), `uniqueness of ${index.name}`).toBe(index.unique);
      }

      const constraints = await rows<{ name: string; kind: string }>(
        db,
        // Those of schema.ts's tables: not the partitions' (0015's bounds on the first ones).
        sql`select c.conname::text as name, c.contype::text as kind from pg_constraint c
            join pg_namespace n on n.oid = c.connamespace join pg_class t on t.oid = c.conrelid
            where n.nspname = 'public' and not t.relispartition`,
      );
      const names = (kind: string) =>
        constraints
          .filter((c) => c.kind === kind)
          .map((c) => c.name)
          .sort();
      const tableConfigs = Object.values(tables).map((t) => getTableConfig(t));
      expect(names("c")).toEqual(tableConfigs.flatMap((c) => c.checks.map((k) => k.name)).sort());
      expect(names("f")).toEqual(tableConfigs.flatMap((c) => c.foreignKeys.map((k) => k.getName())).sort());
    });

    it("start every stream empty: no global counter is left", async () => {
      expect(await db.select().from(schema.userStreams)).toEqual([]);
      expect(await lastEventId(db, 1)).toBe(0);
      const [counter] = await rows<{ n: number }>(
        db,
        sql`select count(*)::int as n from information_schema.tables where table_name = 'event_counter'`,
      );
      expect(counter?.n).toBe(0);
    });

    it("record every committed migration", async () => {
      const [applied] = await rows<{ n: number }>(
        db,
        sql`select count(*)::int as n from lc_migrations.schema_migrations where kind = 'versioned'`,
      );
      expect(committedMigrations).toBeGreaterThan(0);
      expect(applied?.n).toBe(committedMigrations);
      const [functions] = await rows<{ n: number }>(
        db,
        sql`select count(*)::int as n from lc_migrations.schema_migrations where kind = 'repeatable'`,
      );
      expect(functionFiles).toBeGreaterThan(0);
      expect(functions?.n).toBe(functionFiles);
    });

    it("the database refuses a chat with oneself and a second row for one event of a stream", async () => {
      await expect(db.insert(schema.chats).values({ listingId: 1, buyerId: 5, sellerId: 5 })).rejects.toThrow();
      expect(await db.select().from(schema.chats)).toEqual([]);
      const { chat } = await createChatService({ db, publish: () => {} }).open(newId(), newId(), newId());
      const [event] = await rows<{ id: number }>(
        db,
        sql`select id::int as id from chat_events where chat_id = ${chat.id}`,
      );
      await expect(
        db.insert(schema.userEvents).values({ userId: chat.buyer_id, eventId: 1, chatEventId: event!.id }),
      ).rejects.toThrow();
    });

    // Opening PGlite on a data directory twice takes seconds: give it room.
    it("opening an already migrated database again changes nothing", { timeout: 90_000 }, async () => {
      // PostgreSQL: this suite's database. PGlite: the in-memory one cannot be reopened, so a data directory.
      const dir = target.name === "pglite" ? mkdtempSync(join(tmpdir(), "lc-pglite-")) : undefined;
      const reopenable: DatabaseOptions = dir ? { dataDir: dir } : options;
      try {
        const first = dir ? await openDatabase(reopenable) : handle;
        const firstChats = createChatService({ db: first.db, publish: () => {} });
        const { chat } = await firstChats.open(newId(), newId(), newId());
        const counter = await lastEventId(first.db, chat.buyer_id);
        expect(counter).toBeGreaterThan(0);
        if (dir) await first.close();

        const second = await openDatabase(reopenable);
        try {
          const [applied] = await rows<{ n: number }>(
            second.db,
            sql`select count(*)::int as n from lc_migrations.schema_migrations where kind = 'versioned'`,
          );
          expect(applied?.n).toBe(committedMigrations);
          expect(await lastEventId(second.db, chat.buyer_id)).toBe(counter);
          const [stored] = await second.db.select().from(schema.chats).where(eq(schema.chats.id, chat.id));
          expect(stored?.listingId).toBe(chat.listing_id);
          await second.ping();
        } finally {
          await second.close();
        }
      } finally {
        if (dir) rmSync(dir, { recursive: true, force: true });
      }
    });

    it.runIf(target.name === "postgres")("instances that start together migrate once", async () => {
      const fresh = await target.create();
      try {
        const handles = await Promise.all([
          openDatabase(fresh.options),
          openDatabase(fresh.options),
          openDatabase(fresh.options),
        ]);
        try {
          const [applied] = await rows<{ n: number }>(
            handles[0]!.db,
            sql`select count(*)::int as n from lc_migrations.schema_migrations where kind = 'versioned'`,
          );
          expect(applied?.n).toBe(committedMigrations);
          expect(await handles[1]!.db.select().from(schema.userStreams)).toEqual([]);
        } finally {
          await Promise.all(handles.map((h) => h.close()));
        }
      } finally {
        await fresh.drop();
      }
    });
  });

  describe("chat service", () => {
    it("open() creates the chat once, then returns the same one", async () => {
      const buyer = newId();
      const seller = newId();
      const listing = newId();
      const { result: first, events } = await expectEvents(["chat_created"], () => chats.open(buyer, listing, seller));
      expect(first.created).toBe(true);
      expect(first.chat).toMatchObject({ listing_id: listing, buyer_id: buyer, seller_id: seller });
      expect(first.chat.id).toBeGreaterThan(0);
      expect(new Date(first.chat.created_at).toISOString()).toBe(first.chat.created_at);
      expect(events[0]).toEqual({ type: "chat_created", event_id: events[0]!.event_id, chat: first.chat });
      expect(lastAudience()).toEqual(pair(buyer, seller));

      const participants = await db
        .select({ userId: schema.chatParticipants.userId, role: schema.chatParticipants.role })
        .from(schema.chatParticipants)
        .where(eq(schema.chatParticipants.chatId, first.chat.id));
      expect(participants.sort((a, b) => a.userId - b.userId)).toEqual([
        { userId: buyer, role: "buyer" },
        { userId: seller, role: "seller" },
      ]);

      const again = await expectNoEvents(() => chats.open(buyer, listing, seller));
      expect(again).toEqual({ chat: first.chat, created: false });

      // Another listing, or the same people the other way round, is another chat.
      const other = await expectEvents(["chat_created"], () => chats.open(buyer, newId(), seller));
      expect(other.result.chat.id).not.toBe(first.chat.id);
      const swapped = await expectEvents(["chat_created"], () => chats.open(seller, listing, buyer));
      expect(swapped.result.chat.id).not.toBe(first.chat.id);
    });

    it("concurrent open() of the same triple yields one chat and one event", async () => {
      const buyer = newId();
      const seller = newId();
      const listing = newId();
      const { result } = await expectEvents(["chat_created"], () =>
        Promise.all(Array.from({ length: 8 }, () => chats.open(buyer, listing, seller))),
      );
      expect(new Set(result.map((r) => r.chat.id)).size).toBe(1);
      expect(result.filter((r) => r.created)).toHaveLength(1);
      const stored = await db
        .select()
        .from(schema.chats)
        .where(and(eq(schema.chats.listingId, listing), eq(schema.chats.buyerId, buyer)));
      expect(stored).toHaveLength(1);
      const participants = await db
        .select()
        .from(schema.chatParticipants)
        .where(eq(schema.chatParticipants.chatId, stored[0]!.id));
      expect(participants).toHaveLength(2);
    });

    it("refuses a chat with oneself with self_chat 400", async () => {
      const user = newId();
      const listing = newId();
      const error = await expectNoEvents(() => chatError(chats.open(user, listing, user)));
      expect(error.code).toBe(ErrorCode.selfChat);
      expect(error.status).toBe(400);
      expect(await db.select().from(schema.chats).where(eq(schema.chats.listingId, listing))).toEqual([]);
    });
  });

  describe("message service", () => {
    it("send() stores the message, touches the chat and appends new_message", async () => {
      const { chat, buyer, seller } = await newChat();
      const clientMsgId = randomUUID();
      const { result, events } = await expectEvents(["new_message"], () =>
        messages.send(buyer, chat.id, "Is it still available?", clientMsgId),
      );
      expect(result.created).toBe(true);
      const message = result.message;
      expect(message).toEqual({
        id: expect.any(Number),
        chat_id: chat.id,
        sender_id: buyer,
        kind: "text",
        content: "Is it still available?",
        data: null,
        attachments: [],
        client_msg_id: clientMsgId,
        created_at: expect.any(String),
        edited_at: null,
        deleted_at: null,
        deleted_by: null,
      });
      expect(events[0]).toEqual({ type: "new_message", event_id: events[0]!.event_id, chat_id: chat.id, message });
      expect(lastAudience()).toEqual(pair(buyer, seller));

      const row = await messageRow(message.id);
      expect(row?.content).toBe("Is it still available?");
      expect(row?.createdAt.toISOString()).toBe(message.created_at);

      // The chat and both participants' copies of its activity moved to the message.
      const [chatRow] = await db.select().from(schema.chats).where(eq(schema.chats.id, chat.id));
      expect(chatRow?.lastActivityAt.toISOString()).toBe(message.created_at);
      const participants = await db
        .select()
        .from(schema.chatParticipants)
        .where(eq(schema.chatParticipants.chatId, chat.id));
      expect(participants.map((p) => p.lastActivityAt.toISOString())).toEqual([message.created_at, message.created_at]);
    });

    it("a repeated client_msg_id returns the stored message, created=false, and appends nothing", async () => {
      const { chat, buyer } = await newChat();
      const clientMsgId = randomUUID();
      const first = await expectEvents(["new_message"], () => messages.send(buyer, chat.id, "first", clientMsgId));
      const again = await expectNoEvents(() =>
        messages.send(buyer, chat.id, "first, sent again with other text", clientMsgId),
      );
      expect(again).toEqual({ message: first.result.message, created: false });
      const page = await messages.page(buyer, chat.id, undefined, 10);
      expect(page.messages).toHaveLength(1);
    });

    it("without a client_msg_id every send is a new message", async () => {
      const { chat, buyer } = await newChat();
      const { result } = await expectEvents(["new_message", "new_message"], async () => [
        await messages.send(buyer, chat.id, "same", null),
        await messages.send(buyer, chat.id, "same", null),
      ]);
      expect(result.map((r) => r.created)).toEqual([true, true]);
      expect(result[0]!.message.id).not.toBe(result[1]!.message.id);
      expect(result[0]!.message.client_msg_id).toBeNull();
    });

    it("client_msg_id is per sender: the other participant may use the same one", async () => {
      const { chat, buyer, seller } = await newChat();
      const clientMsgId = randomUUID();
      const { result } = await expectEvents(["new_message", "new_message"], async () => [
        await messages.send(buyer, chat.id, "from the buyer", clientMsgId),
        await messages.send(seller, chat.id, "from the seller", clientMsgId),
      ]);
      expect(result.map((r) => [r.created, r.message.sender_id])).toEqual([
        [true, buyer],
        [true, seller],
      ]);
    });

    it("the same client_msg_id in another chat is a 409 conflict and stores nothing", async () => {
      const buyer = newId();
      const { chat: first } = await chats.open(buyer, newId(), newId());
      const { chat: second } = await chats.open(buyer, newId(), newId());
      const clientMsgId = randomUUID();
      await messages.send(buyer, first.id, "in the first chat", clientMsgId);
      const error = await expectNoEvents(() =>
        chatError(messages.send(buyer, second.id, "in the second chat", clientMsgId)),
      );
      expect(error.code).toBe(ErrorCode.conflict);
      expect(error.status).toBe(409);
      expect((await messages.page(buyer, second.id, undefined, 10)).messages).toEqual([]);
    });

    it("an outsider, or a chat that does not exist, gets 404 and stores nothing", async () => {
      const { chat } = await newChat();
      const outsider = newId();
      const error = await expectNoEvents(() => chatError(messages.send(outsider, chat.id, "hello", randomUUID())));
      expect(error.code).toBe(ErrorCode.notFound);
      expect(error.status).toBe(404);
      const missing = await expectNoEvents(() => chatError(messages.send(outsider, 999_999_999, "hello", null)));
      expect(missing.status).toBe(404);
      expect(await db.select().from(schema.messages).where(eq(schema.messages.senderId, outsider))).toEqual([]);
      // Paging is just as closed.
      expect((await chatError(messages.page(outsider, chat.id, undefined, 10))).status).toBe(404);
    });

    it("page() is newest first and pages with before, limit and has_more", async () => {
      const { chat, buyer, seller } = await newChat();
      const sent: Message[] = [];
      for (let i = 1; i <= 5; i++)
        sent.push((await messages.send(i % 2 ? buyer : seller, chat.id, `m${i}`, null)).message);
      const ids = sent.map((m) => m.id);

      const first = await messages.page(seller, chat.id, undefined, 2);
      expect(first.messages.map((m) => m.id)).toEqual([ids[4], ids[3]]);
      expect(first.messages[0]).toEqual(sent[4]);
      expect(first.has_more).toBe(true);

      const second = await messages.page(seller, chat.id, first.messages.at(-1)!.id, 2);
      expect(second.messages.map((m) => m.id)).toEqual([ids[2], ids[1]]);
      expect(second.has_more).toBe(true);

      const third = await messages.page(seller, chat.id, second.messages.at(-1)!.id, 2);
      expect(third.messages.map((m) => m.id)).toEqual([ids[0]]);
      expect(third.has_more).toBe(false);

      const exact = await messages.page(buyer, chat.id, undefined, 5);
      expect(exact.messages.map((m) => m.content)).toEqual(["m5", "m4", "m3", "m2", "m1"]);
      expect(exact.has_more).toBe(false);

      const beforeFirst = await messages.page(buyer, chat.id, ids[0], 10);
      expect(beforeFirst).toEqual({ messages: [], has_more: false });
    });

    it("edit(): the sender may, the other participant gets 403, an outsider 404", async () => {
      const { chat, buyer, seller } = await newChat();
      const { message } = await messages.send(seller, chat.id, "price: 100", randomUUID());

      const { result: edited, events } = await expectEvents(["message_edited"], () =>
        messages.edit(seller, message.id, "price: 90"),
      );
      expect(edited).toMatchObject({
        id: message.id,
        content: "price: 90",
        created_at: message.created_at,
        deleted_at: null,
      });
      expect(edited.edited_at).not.toBeNull();
      expect(events[0]).toEqual({
        type: "message_edited",
        event_id: events[0]!.event_id,
        chat_id: chat.id,
        message: edited,
      });
      expect((await messageRow(message.id))?.content).toBe("price: 90");

      const forbidden = await expectNoEvents(() => chatError(messages.edit(buyer, message.id, "price: 1")));
      expect(forbidden.code).toBe(ErrorCode.forbidden);
      expect(forbidden.status).toBe(403);

      const outsider = await expectNoEvents(() => chatError(messages.edit(newId(), message.id, "price: 1")));
      expect(outsider.code).toBe(ErrorCode.notFound);
      expect(outsider.status).toBe(404);

      const missing = await expectNoEvents(() => chatError(messages.edit(seller, 999_999_999, "x")));
      expect(missing.status).toBe(404);

      expect((await messageRow(message.id))?.content).toBe("price: 90");
    });

    it("remove() is a soft delete that scrubs the content from the log and is idempotent", async () => {
      const { chat, buyer, seller } = await newChat();
      const { message } = await messages.send(buyer, chat.id, "my phone is 555-0100", randomUUID());
      await messages.edit(buyer, message.id, "my phone is 555-0199");
      const { message: kept } = await messages.send(buyer, chat.id, "this one stays", randomUUID());

      // Before: the content is in the log…
      const beforeLog = await eventsOf(db, seller, 0, 1_000);
      expect(beforeLog.filter((e) => "message" in e && e.message.id === message.id).map((e) => e.type)).toEqual([
        "new_message",
        "message_edited",
      ]);
      // …read from the message row, the only place that stores it: the events keep who, where and when.
      const stored = await rows<{ payload: string }>(
        db,
        sql`select payload::text as payload from chat_events where message_id = ${message.id}`,
      );
      expect(stored).toHaveLength(2);
      for (const r of stored) expect(r.payload).not.toContain("555-01");

      const { result: deleted, events } = await expectEvents(["message_deleted"], () =>
        messages.remove(buyer, message.id),
      );
      expect(deleted).toMatchObject({ id: message.id, chat_id: chat.id, sender_id: buyer, content: "" });
      expect(deleted.deleted_at).not.toBeNull();
      expect(events[0]).toEqual({
        type: "message_deleted",
        event_id: events[0]!.event_id,
        chat_id: chat.id,
        message: deleted,
      });

      // Soft: the row is still there, marked deleted; the API shape has no content.
      const row = await messageRow(message.id);
      expect(row?.deletedAt?.toISOString()).toBe(deleted.deleted_at);
      const page = await messages.page(seller, chat.id, undefined, 10);
      expect(page.messages.map((m) => [m.id, m.content])).toEqual([
        [kept.id, "this one stays"],
        [message.id, ""],
      ]);

      // Replaying the log no longer carries the content, for either participant.
      for (const user of [buyer, seller]) {
        const log = await eventsOf(db, user, 0, 1_000);
        const aboutIt = log.filter((e) => "message" in e && e.message.id === message.id);
        expect(aboutIt.map((e) => e.type)).toEqual(["new_message", "message_edited", "message_deleted"]);
        for (const e of aboutIt) expect("message" in e && e.message.content).toBe("");
        const aboutKept = log.filter((e) => "message" in e && e.message.id === kept.id);
        expect(aboutKept.map((e) => "message" in e && e.message.content)).toEqual(["this one stays"]);
      }
      const raw = await rows<{ payload: string }>(
        db,
        sql`select payload::text as payload from chat_events where message_id = ${message.id}`,
      );
      expect(raw).toHaveLength(3);
      for (const r of raw) expect(r.payload).not.toContain("555-01");

      // A second delete changes nothing and tells no one.
      const again = await expectNoEvents(() => messages.remove(buyer, message.id));
      expect(again).toEqual(deleted);

      // A deleted message cannot be edited.
      const conflict = await expectNoEvents(() => chatError(messages.edit(buyer, message.id, "back again")));
      expect(conflict.code).toBe(ErrorCode.conflict);
      expect(conflict.status).toBe(409);
      expect((await messages.page(seller, chat.id, undefined, 10)).messages[1]?.content).toBe("");

      // Only the sender may delete.
      const forbidden = await expectNoEvents(() => chatError(messages.remove(seller, kept.id)));
      expect(forbidden.status).toBe(403);
      const outsider = await expectNoEvents(() => chatError(messages.remove(newId(), kept.id)));
      expect(outsider.status).toBe(404);
      expect((await messageRow(kept.id))?.deletedAt).toBeNull();
    });

    it("concurrent edits and deletes of one message: one delete event, never an edit after it", async () => {
      const { chat, buyer } = await newChat();
      const { message } = await messages.send(buyer, chat.id, "original", null);
      const before = await lastEventId(db, buyer);
      const outcomes = await Promise.allSettled([
        messages.remove(buyer, message.id),
        messages.edit(buyer, message.id, "edited 1"),
        messages.remove(buyer, message.id),
        messages.edit(buyer, message.id, "edited 2"),
      ]);
      const logged = (await readEventRange(db, buyer, before, await lastEventId(db, buyer))).events.map((e) => e.event);
      const types = logged.map((e) => e.type);
      expect(types.filter((t) => t === "message_deleted")).toHaveLength(1);
      expect(types.slice(types.indexOf("message_deleted") + 1)).toEqual([]);
      // Every edit either happened before the delete or was refused with 409; both deletes answer the deleted message.
      const edits = [outcomes[1], outcomes[3]];
      const editEvents = types.filter((t) => t === "message_edited").length;
      expect(edits.filter((o) => o?.status === "fulfilled")).toHaveLength(editEvents);
      for (const o of edits) {
        if (o?.status === "rejected") expect((o.reason as ChatError).status).toBe(409);
      }
      for (const o of [outcomes[0], outcomes[2]]) {
        expect(o?.status).toBe("fulfilled");
        if (o?.status === "fulfilled") expect((o.value as { deleted_at: string | null }).deleted_at).not.toBeNull();
      }
      const row = await messageRow(message.id);
      expect(row?.deletedAt).not.toBeNull();
    });
  });

  describe("per-user event streams", () => {
    it.each([
      { commits: "each send its own transaction", groupCommit: { maxWaitMs: 0, maxBatch: 1 } },
      { commits: "overlapping batches of 5", groupCommit: { maxWaitMs: 0, maxBatch: 5 } },
      { commits: "one batch of all", groupCommit: { maxWaitMs: 5, maxBatch: 64 } },
    ])(
      "stay dense and complete for every user under concurrent sends in overlapping chats ($commits)",
      async ({ groupCommit }) => {
        const sender = createMessageService({
          db,
          publish,
          limits: createRateLimiter({ limits: { send: 100_000 } }),
          groupCommit,
        });
        const alice = newId();
        const bob = newId();
        const carol = newId();
        const dave = newId();
        const c1 = (await chats.open(alice, newId(), bob)).chat;
        const c2 = (await chats.open(carol, newId(), bob)).chat;
        const c3 = (await chats.open(alice, newId(), dave)).chat;
        // A↔B, B↔C, A↔D: every send locks two streams, in overlapping pairs, from both ends.
        const senders: Array<[number, number]> = [
          [alice, c1.id],
          [bob, c1.id],
          [carol, c2.id],
          [bob, c2.id],
          [alice, c3.id],
          [dave, c3.id],
        ];
        const users = [alice, bob, carol, dave];
        const before = new Map(await Promise.all(users.map(async (u) => [u, await lastEventId(db, u)] as const)));
        const publishedBefore = recorder.published().length;

        const results = await withTimeout(
          Promise.all(
            Array.from({ length: 42 }, (_, i) => {
              const [from, chatId] = senders[i % senders.length]!;
              return sender.send(from, chatId, `concurrent ${i}`, randomUUID());
            }),
          ),
          20_000,
          "42 concurrent sends on overlapping streams",
        );
        expect(results.every((r) => r.created)).toBe(true);
        const chatOf = new Map(results.map((r) => [r.message.id, r.message.chat_id]));
        const participants = new Map([
          [c1.id, [alice, bob]],
          [c2.id, [carol, bob]],
          [c3.id, [alice, dave]],
        ]);

        const fresh: AddressedEvent[] = [];
        for (const user of users) {
          const stream = await eventsOf(db, user, 0, 10_000);
          // 1, 2, 3 … with no hole, and its end is the stream's end.
          expect(stream.map((e) => e.event_id)).toEqual(Array.from({ length: stream.length }, (_, i) => i + 1));
          expect(await lastEventId(db, user)).toBe(stream.length);
          const mine = stream.filter((e) => e.event_id > before.get(user)!);
          // Exactly the sends in the user's chats, each once.
          const expected = results.filter((r) => participants.get(r.message.chat_id)!.includes(user));
          expect(mine.every((e) => e.type === "new_message")).toBe(true);
          expect(mine.map((e) => (e.type === "new_message" ? e.message.id : 0)).sort((a, b) => a - b)).toEqual(
            expected.map((r) => r.message.id).sort((a, b) => a - b),
          );
          for (const event of mine) {
            if (event.type === "new_message") expect(chatOf.get(event.message.id)).toBe(event.chat_id);
            fresh.push({ userId: user, event });
          }
        }

        // Each (user, event) was published exactly once, after its commit.
        const byUserThenId = (a: AddressedEvent, b: AddressedEvent) =>
          a.userId - b.userId || a.event.event_id - b.event.event_id;
        expect(recorder.published().slice(publishedBefore).sort(byUserThenId)).toEqual(fresh.sort(byUserThenId));
        await recorder.expectAllCommitted();

        const carols = await eventsOf(db, carol, 0, 10_000);
        expect(carols.every((e) => ("chat" in e ? e.chat.id : "chat_id" in e && e.chat_id) === c2.id)).toBe(true);
        // chat_created + 7 of her own sends + 7 of bob's in c2.
        expect(carols).toHaveLength(15);

        // after and limit page through the same sequence.
        const bobs = await eventsOf(db, bob, 0, 10_000);
        const cursor = bobs[4]!.event_id;
        expect(await eventsOf(db, bob, cursor, 3)).toEqual(bobs.slice(5, 8));
        const paged: ChatEvent[] = [];
        for (let after = 0; ; ) {
          const page = await eventsOf(db, bob, after, 4);
          paged.push(...page);
          if (page.length < 4) break;
          after = page.at(-1)!.event_id;
        }
        expect(paged).toEqual(bobs);
        expect(await eventsOf(db, bob, bobs.at(-1)!.event_id, 10)).toEqual([]);
        expect(await eventsOf(db, newId(), 0, 10)).toEqual([]);
        expect(await readEventRange(db, bob, bobs.length, bobs.length + 10)).toEqual({ events: [], more: false });
      },
    );

    it("a change seen by both participants is one row of chat_events with an id in each stream", async () => {
      const { chat, buyer, seller } = await newChat();
      const { message } = await messages.send(buyer, chat.id, "once, twice numbered", null);
      const [stored] = await rows<{ n: number }>(
        db,
        sql`select count(*)::int as n from chat_events where message_id = ${message.id}`,
      );
      expect(stored?.n).toBe(1);
      for (const user of [buyer, seller]) {
        const stream = await eventsOf(db, user, 0, 100);
        expect(stream.filter((e) => e.type === "new_message" && e.message.id === message.id)).toHaveLength(1);
      }
    });
  });

  describe("group commit", () => {
    it("stores a batch in one transaction and answers each send of it on its own", async () => {
      const { chat, buyer, seller } = await newChat();
      const elsewhere = (await chats.open(buyer, newId(), newId())).chat;
      const usedElsewhere = randomUUID();
      await messages.send(buyer, elsewhere.id, "first use of the id", usedElsewhere);
      const twice = randomUUID();
      const before = { buyer: await lastEventId(db, buyer), seller: await lastEventId(db, seller) };

      const outcomes = await storeMessages(db, [
        { senderId: buyer, chatId: chat.id, content: "one", clientMsgId: twice },
        { senderId: newId(), chatId: chat.id, content: "not a participant", clientMsgId: null },
        { senderId: buyer, chatId: chat.id, content: "id used in another chat", clientMsgId: usedElsewhere },
        { senderId: seller, chatId: chat.id, content: "two", clientMsgId: null },
        { senderId: buyer, chatId: chat.id, content: "one, sent again in the same batch", clientMsgId: twice },
        { senderId: buyer, chatId: 987_654_321, content: "no such chat", clientMsgId: null },
        { senderId: buyer, chatId: chat.id, content: "three", clientMsgId: null },
      ]);

      expect(outcomes.map((o) => o.status)).toEqual([
        "created",
        "not_found",
        "conflict",
        "created",
        "repeat",
        "not_found",
        "created",
      ]);
      const created = outcomes.flatMap((o) => (o.status === "created" ? [o] : []));
      expect(created.map((o) => o.message.content)).toEqual(["one", "two", "three"]);
      // The repeat answers the message stored by the first send of the batch.
      expect(outcomes[4]).toEqual({ status: "repeat", message: created[0]!.message });
      // Each participant's stream got the three, in the batch's order, with no hole.
      for (const [user, after] of [
        [buyer, before.buyer],
        [seller, before.seller],
      ] as const) {
        const mine = created.map((o) => o.events.find((e) => e.userId === user)!.event);
        expect(mine.map((e) => e.event_id)).toEqual([after + 1, after + 2, after + 3]);
        expect(await eventsOf(db, user, after, 100)).toEqual(mine);
        expect(await lastEventId(db, user)).toBe(after + 3);
      }
      const page = await messages.page(buyer, chat.id, undefined, 10);
      expect(page.messages.map((m) => m.content)).toEqual(["three", "two", "one"]);
    });

    it("concurrent sends through the service: each caller gets its own answer", async () => {
      const { chat, buyer, seller } = await newChat();
      const batched = createMessageService({
        db,
        publish,
        limits: createRateLimiter({ limits: { send: 100_000 } }),
        groupCommit: { maxWaitMs: 5, maxBatch: 64 },
      });
      const publishedBefore = recorder.published().length;
      const [good, outsider, fromSeller] = await Promise.allSettled([
        batched.send(buyer, chat.id, "good", randomUUID()),
        batched.send(newId(), chat.id, "outsider", randomUUID()),
        batched.send(seller, chat.id, "also good", null),
      ]);
      expect(good).toMatchObject({ status: "fulfilled", value: { created: true, message: { content: "good" } } });
      expect(outsider).toMatchObject({ status: "rejected", reason: { status: 404 } });
      expect(fromSeller).toMatchObject({ status: "fulfilled", value: { created: true } });
      // Two messages, each told to both participants.
      expect(recorder.published().length - publishedBefore).toBe(4);
      await recorder.expectAllCommitted();
    });
  });

  describe("read markers and unread counts", () => {
    it("keeps each unread count and each user's total equal to a recount, through concurrent sends, deletes and reads", async () => {
      const seller = newId();
      const buyers = [newId(), newId(), newId()];
      const opened = await Promise.all(buyers.map((buyer) => chats.open(buyer, newId(), seller)));
      const chatIds = opened.map((o) => o.chat.id);
      const first = await Promise.all(
        chatIds.flatMap((chatId, i) => [
          ...Array.from({ length: 8 }, (_, n) => messages.send(buyers[i]!, chatId, `buyer ${n}`, null)),
          ...Array.from({ length: 4 }, (_, n) => messages.send(seller, chatId, `seller ${n}`, null)),
        ]),
      );
      const byChat = (chatId: number, sender: number) =>
        first.map((r) => r.message).filter((m) => m.chat_id === chatId && m.sender_id === sender);
      // All at once: deletes of unread and of read messages, reads part of the way and to the end, more sends.
      const [c0, c1, c2] = chatIds as [number, number, number];
      await Promise.all([
        messages.remove(buyers[0]!, byChat(c0, buyers[0]!)[1]!.id),
        messages.remove(buyers[0]!, byChat(c0, buyers[0]!)[6]!.id),
        chats.markRead(seller, c0, byChat(c0, buyers[0]!)[3]!.id),
        chats.markRead(seller, c1, byChat(c1, buyers[1]!).at(-1)!.id),
        messages.remove(seller, byChat(c1, seller)[0]!.id),
        ...Array.from({ length: 5 }, (_, n) => messages.send(buyers[1]!, c1, `later ${n}`, null)),
        chats.markRead(buyers[2]!, c2, byChat(c2, seller).at(-1)!.id),
        messages.send(seller, c2, "one more for the buyer", null),
      ]);

      const recount = await rows<{ chat_id: number; user_id: number; kept: number; counted: number }>(
        db,
        sql`select p.chat_id, p.user_id, p.unread_count as kept,
              (select count(*)::int from messages m where m.chat_id = p.chat_id and m.sender_id <> p.user_id
                 and m.deleted_at is null and m.id > coalesce(p.last_read_message_id, 0)) as counted
            from chat_participants p where p.chat_id in (${c0}, ${c1}, ${c2})`,
      );
      expect(recount).toHaveLength(6);
      for (const row of recount) expect(row.kept, `chat ${row.chat_id}, user ${row.user_id}`).toBe(row.counted);
      const totals = await rows<{ user_id: number; kept: number; counted: number }>(
        db,
        sql`select s.user_id, s.unread_total::int as kept,
              (select coalesce(sum(p.unread_count), 0)::int from chat_participants p where p.user_id = s.user_id) as counted
            from user_streams s where s.user_id in (${seller}, ${buyers[0]!}, ${buyers[1]!}, ${buyers[2]!})`,
      );
      expect(totals).toHaveLength(4);
      for (const row of totals) expect(row.kept, `user ${row.user_id}`).toBe(row.counted);
      // Bigints arrive as strings from node-postgres.
      const sellerTotal = totals.find((t) => Number(t.user_id) === seller)!.counted;
      expect(sellerTotal).toBeGreaterThan(0);
      expect((await chats.unread(seller)).total).toBe(sellerTotal);
      // The list shows the same counts as the badge.
      const listed = await chats.list(seller, 10);
      const badge = await chats.unread(seller);
      for (const chat of listed) expect(chat.unread_count).toBe(badge.chats[String(chat.id)] ?? 0);
    });

    it("markRead moves forward only and emits message_read when it moves", async () => {
      const { chat, buyer, seller } = await newChat();
      const m1 = (await messages.send(seller, chat.id, "one", null)).message;
      const m2 = (await messages.send(seller, chat.id, "two", null)).message;
      const m3 = (await messages.send(seller, chat.id, "three", null)).message;
      const own = (await messages.send(buyer, chat.id, "mine", null)).message;

      expect(await chats.unread(buyer)).toEqual({ total: 3, chats: { [String(chat.id)]: 3 } });
      expect(await chats.unread(seller)).toEqual({ total: 1, chats: { [String(chat.id)]: 1 } });

      const startedAt = Date.now();
      const { result, events } = await expectEvents(["message_read"], () => chats.markRead(buyer, chat.id, m2.id));
      expect(result).toEqual({ chat_id: chat.id, message_id: m2.id, unread_count: 1 });
      const read = events[0]!;
      expect(read).toEqual({
        type: "message_read",
        event_id: read.event_id,
        chat_id: chat.id,
        message_id: m2.id,
        read_by: buyer,
        read_at: expect.any(String),
      });
      if (read.type !== "message_read") throw new Error("unreachable");
      expect(new Date(read.read_at).toISOString()).toBe(read.read_at);
      expect(new Date(read.read_at).getTime()).toBeGreaterThanOrEqual(startedAt - 1_000);
      expect(lastAudience()).toEqual(pair(buyer, seller));

      // Older or the same message later: the marker stays, nothing is emitted.
      expect(await expectNoEvents(() => chats.markRead(buyer, chat.id, m1.id))).toEqual({
        chat_id: chat.id,
        message_id: m1.id,
        unread_count: 1,
      });
      await expectNoEvents(() => chats.markRead(buyer, chat.id, m2.id));
      const [marker] = await db
        .select({ last: schema.chatParticipants.lastReadMessageId })
        .from(schema.chatParticipants)
        .where(and(eq(schema.chatParticipants.chatId, chat.id), eq(schema.chatParticipants.userId, buyer)));
      expect(marker?.last).toBe(m2.id);
      expect(await chats.unread(buyer)).toEqual({ total: 1, chats: { [String(chat.id)]: 1 } });

      // A deleted message is not unread any more.
      await messages.remove(seller, m3.id);
      expect(await chats.unread(buyer)).toEqual({ total: 0, chats: {} });

      // Reading up to one's own newest message moves the marker too.
      const { result: upToOwn } = await expectEvents(["message_read"], () => chats.markRead(buyer, chat.id, own.id));
      expect(upToOwn.unread_count).toBe(0);

      const m5 = (await messages.send(seller, chat.id, "five", null)).message;
      expect(await chats.unread(buyer)).toEqual({ total: 1, chats: { [String(chat.id)]: 1 } });
      await expectEvents(["message_read"], () => chats.markRead(buyer, chat.id, m5.id));
      expect(await chats.unread(buyer)).toEqual({ total: 0, chats: {} });
    });

    it("markRead refuses a message of another chat, a missing one, and outsiders with 404", async () => {
      const { chat, buyer, seller } = await newChat();
      const other = await chats.open(buyer, newId(), newId());
      const foreign = (await messages.send(buyer, other.chat.id, "elsewhere", null)).message;
      const mine = (await messages.send(seller, chat.id, "here", null)).message;

      for (const attempt of [
        () => chats.markRead(buyer, chat.id, foreign.id),
        () => chats.markRead(buyer, chat.id, 999_999_999),
        () => chats.markRead(newId(), chat.id, mine.id),
      ]) {
        const error = await expectNoEvents(() => chatError(attempt()));
        expect(error.code).toBe(ErrorCode.notFound);
        expect(error.status).toBe(404);
      }
      expect((await chats.unread(buyer)).chats[String(chat.id)]).toBe(1);
    });

    it("unread() sums over chats and leaves out chats with nothing unread", async () => {
      const me = newId();
      const a = (await chats.open(me, newId(), newId())).chat;
      const b = (await chats.open(newId(), newId(), me)).chat;
      const quiet = (await chats.open(me, newId(), newId())).chat;
      await messages.send(a.seller_id, a.id, "1", null);
      await messages.send(a.seller_id, a.id, "2", null);
      await messages.send(b.buyer_id, b.id, "3", null);
      await messages.send(me, quiet.id, "only my own", null);
      expect(await chats.unread(me)).toEqual({ total: 3, chats: { [String(a.id)]: 2, [String(b.id)]: 1 } });
      expect(await chats.unread(newId())).toEqual({ total: 0, chats: {} });
    });
  });

  describe("list()", () => {
    it("orders by newest activity and carries last_message and unread_count", async () => {
      const me = newId();
      const first = (await chats.open(me, newId(), newId())).chat;
      await sleep(5);
      const second = (await chats.open(newId(), newId(), me)).chat;
      await sleep(5);
      const third = (await chats.open(me, newId(), newId())).chat;
      await sleep(5);
      expect((await chats.list(me, 10)).map((c) => c.id)).toEqual([third.id, second.id, first.id]);

      // A message moves its chat to the top.
      await messages.send(first.seller_id, first.id, "hello?", null);
      await sleep(5);
      const last = (await messages.send(first.seller_id, first.id, "are you there?", null)).message;
      await sleep(5);
      const mine = (await messages.send(me, second.id, "an offer", null)).message;

      const list = await chats.list(me, 10);
      expect(list.map((c) => c.id)).toEqual([second.id, first.id, third.id]);
      expect(list[0]).toMatchObject({ id: second.id, buyer_id: second.buyer_id, seller_id: me, unread_count: 0 });
      expect(list[0]!.last_message).toEqual(mine);
      expect(list[0]!.last_activity_at).toBe(mine.created_at);
      expect(list[1]!.last_message).toEqual(last);
      expect(list[1]!.unread_count).toBe(2);
      expect(list[2]!.last_message).toBeNull();
      expect(list[2]!.unread_count).toBe(0);

      // limit, and the other side's view of the same chat.
      expect((await chats.list(me, 2)).map((c) => c.id)).toEqual([second.id, first.id]);
      const theirs = await chats.list(first.seller_id, 10);
      expect(theirs.map((c) => [c.id, c.unread_count])).toEqual([[first.id, 0]]);

      // A deleted last message is shown without its content; read markers lower the count.
      await messages.remove(first.seller_id, last.id);
      const afterDelete = (await chats.list(me, 10)).find((c) => c.id === first.id)!;
      expect(afterDelete.last_message).toMatchObject({ id: last.id, content: "" });
      expect(afterDelete.last_message?.deleted_at).not.toBeNull();
      expect(afterDelete.unread_count).toBe(1);
      expect(await chats.list(newId(), 10)).toEqual([]);
    });
  });

  describe("rate limiting through the service", () => {
    it("refuses the 4th send of 3 a minute with 429 and stores nothing; repeats are free", async () => {
      const limited = createMessageService({ db, publish, limits: createRateLimiter({ limits: { send: 3 } }) });
      const { chat, buyer, seller } = await newChat();
      const firstId = randomUUID();
      await expectEvents(["new_message", "new_message"], async () => {
        await limited.send(buyer, chat.id, "1", firstId);
        await limited.send(buyer, chat.id, "2", randomUUID());
      });
      // A repeat of a stored message answers without using the allowance.
      const repeat = await expectNoEvents(() => limited.send(buyer, chat.id, "1", firstId));
      expect(repeat.created).toBe(false);
      await expectEvents(["new_message"], () => limited.send(buyer, chat.id, "3", randomUUID()));

      const error = await expectNoEvents(() => chatError(limited.send(buyer, chat.id, "4", randomUUID())));
      expect(error).toBeInstanceOf(RateLimitedError);
      expect(error.code).toBe(ErrorCode.rateLimited);
      expect(error.status).toBe(429);
      const retryAfterMs = (error as RateLimitedError).retryAfterMs;
      expect(retryAfterMs).toBeGreaterThan(0);
      expect(retryAfterMs).toBeLessThanOrEqual(60_000);
      expect((await limited.page(buyer, chat.id, undefined, 10)).messages.map((m) => m.content)).toEqual([
        "3",
        "2",
        "1",
      ]);

      // Still refused on the next try; a repeat is still answered; the other participant has an allowance of their own.
      expect(await chatError(limited.send(buyer, chat.id, "5", null))).toBeInstanceOf(RateLimitedError);
      expect((await limited.send(buyer, chat.id, "1", firstId)).created).toBe(false);
      expect((await limited.send(seller, chat.id, "reply", null)).created).toBe(true);
    });

    it("refused sends (404, 409) do not use the allowance", async () => {
      const limited = createMessageService({ db, publish, limits: createRateLimiter({ limits: { send: 1 } }) });
      const buyer = newId();
      const { chat: first } = await chats.open(buyer, newId(), newId());
      const { chat: second } = await chats.open(buyer, newId(), newId());
      const used = randomUUID();
      await messages.send(buyer, first.id, "through the unlimited service", used);
      for (let i = 0; i < 3; i++) {
        expect((await chatError(limited.send(buyer, 999_999_999, "nowhere", null))).status).toBe(404);
        expect((await chatError(limited.send(buyer, second.id, "reused id", used))).status).toBe(409);
      }
      expect((await limited.send(buyer, second.id, "the one allowed", null)).created).toBe(true);
      expect(await chatError(limited.send(buyer, second.id, "one too many", null))).toBeInstanceOf(RateLimitedError);
    });
  });

  /**
   * Concurrent sends with one client_msg_id take the path where the insert finds the row of a
   * concurrent transaction. On a database of its own, so that a hang cannot take the other tests with it.
   */
  describe("concurrent sends with the same client_msg_id", () => {
    let own: DatabaseHandle | undefined;
    let dropOwn: () => Promise<void> = async () => {};
    const ownRecorder = createRecorder(() => own!.db);

    beforeAll(async () => {
      const created = await target.create();
      dropOwn = created.drop;
      own = await openDatabase(created.options);
      if (own.kind === "postgres") {
        // If the sends hang, afterAll ends their connections. A client that is checked out has no 'error'
        // listener of the pool's (see the report on src/db/client.ts); give it one so that ending it is quiet.
        const pool = (own.db as unknown as { $client: pg.Pool }).$client;
        const quieted = new WeakSet<object>();
        pool.on("acquire", (client) => {
          if (quieted.has(client)) return;
          quieted.add(client);
          client.on("error", () => {});
        });
      }
    });

    afterAll(async () => {
      // Drop first: on PostgreSQL it ends connections a hung test may still hold, so close() can finish.
      await dropOwn();
      await withTimeout(own?.close() ?? Promise.resolve(), 5_000, "close()").catch(() => {});
    });

    it.each([
      { commits: "each send its own transaction", groupCommit: { maxWaitMs: 0, maxBatch: 1 } },
      { commits: "in batches of 3", groupCommit: { maxWaitMs: 0, maxBatch: 3 } },
      { commits: "all in one batch", groupCommit: { maxWaitMs: 0, maxBatch: 64 } },
    ])(
      "store exactly one message and one event, and give back the allowance of the losers ($commits)",
      async ({ groupCommit }) => {
        const ownDb = own!.db;
        const ownChats = createChatService({ db: ownDb, publish: ownRecorder.publish });
        const ownMessages = createMessageService({
          db: ownDb,
          publish: ownRecorder.publish,
          limits: createRateLimiter({ limits: { send: 10 } }),
          groupCommit,
        });
        const buyer = newId();
        const { chat } = await ownChats.open(buyer, newId(), newId());
        const before = await lastEventId(ownDb, buyer);
        const publishedBefore = ownRecorder.publish.mock.calls.length;
        const clientMsgId = randomUUID();

        const results = await withTimeout(
          Promise.all(Array.from({ length: 10 }, () => ownMessages.send(buyer, chat.id, "only once", clientMsgId))),
          10_000,
          "10 concurrent sends with one client_msg_id",
        );

        expect(new Set(results.map((r) => r.message.id)).size).toBe(1);
        expect(results.filter((r) => r.created)).toHaveLength(1);
        const stored = await ownDb.select().from(schema.messages).where(eq(schema.messages.chatId, chat.id));
        expect(stored).toHaveLength(1);
        expect(await lastEventId(ownDb, buyer)).toBe(before + 1);
        const { events: log } = await readEventRange(ownDb, buyer, before, before + 1);
        expect(log.map((e) => e.event.type)).toEqual(["new_message"]);
        expect(ownRecorder.publish.mock.calls.length - publishedBefore).toBe(1);
        await ownRecorder.expectAllCommitted();

        // One send of the ten was counted: nine more fit in the minute, the tenth does not.
        for (let i = 0; i < 9; i++) await ownMessages.send(buyer, chat.id, `more ${i}`, randomUUID());
        expect(await chatError(ownMessages.send(buyer, chat.id, "over", randomUUID()))).toBeInstanceOf(
          RateLimitedError,
        );
      },
    );
  });
});
