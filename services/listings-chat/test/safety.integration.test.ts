/**
 * Blocks and reports (CONTRACT §10), and who shares presence: at the service level with a recording publisher
 * (what is stored, what each stream gets, what is told), and over HTTP and WebSocket on a real instance. On
 * PGlite always and on PostgreSQL when DATABASE_URL is set (there the races are real: concurrent
 * transactions).
 */
import { randomUUID } from "node:crypto";
import { type ChatEvent, ErrorCode } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recentContactsOf, sharesPresence } from "../src/chats/repository.ts";
import { type ChatService, createChatService } from "../src/chats/service.ts";
import type { Database } from "../src/db/client.ts";
import { ChatError, RateLimitedError } from "../src/errors.ts";
import { type AddressedEvent, lastEventId, readStreamPage } from "../src/events/log.ts";
import { createRateLimiter } from "../src/limits/rate-limiter.ts";
import { editMessage, type SendOutcome, storeMessages } from "../src/messages/repository.ts";
import { createMessageService, type MessageService } from "../src/messages/service.ts";
import { blockUser } from "../src/safety/blocks.ts";
import { createSafetyService, type SafetyService } from "../src/safety/service.ts";
import { renewLease } from "../src/webhooks/outbox.ts";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat, type TestSocket } from "./support/harness.ts";

/** Raw SQL rows, the same on PGlite and node-postgres (cast bigints in SQL: drivers differ on them). */
async function rows<T>(db: Database, query: ReturnType<typeof sql>): Promise<T[]> {
  return ((await db.execute(query)) as unknown as { rows: T[] }).rows;
}

/** The ChatError `work` fails with. */
async function chatError(work: Promise<unknown>): Promise<ChatError> {
  try {
    await work;
  } catch (error) {
    expect(error).toBeInstanceOf(ChatError);
    return error as ChatError;
  }
  throw new Error("expected a ChatError, but the call succeeded");
}

/** The whole of `userId`'s stream after `after`. */
const streamOf = async (db: Database, userId: number, after = 0) =>
  (await readStreamPage(db, userId, after, { maxEvents: 10_000, maxBytes: 2 ** 31 - 1 })).events;

describe.each(databaseTargets())("safety on $name", (target) => {
  let chat: TestChat;
  let drop: () => Promise<void> = async () => {};
  let db: Database;
  const published: AddressedEvent[] = [];
  let chats: ChatService;
  let messages: MessageService;
  let safety: SafetyService;
  const REPORTS_PER_HOUR = 3;

  // Each test uses users and listings of its own.
  let nextId = 70_000;
  const newId = () => nextId++;

  beforeAll(async () => {
    const created = await target.create();
    drop = created.drop;
    chat = await startTestChat({ database: created.options });
    db = chat.server.database.db;
    // Webhooks on, as an instance with WEBHOOK_URL keeps them (webhooks/outbox.ts renewLease), with no sender
    // here: what the safety writes record stays in webhook_deliveries to be read below.
    await renewLease(db);
    const publish = (events: readonly AddressedEvent[]) => {
      published.push(...events);
    };
    const limits = createRateLimiter({
      limits: { send: 100_000, edit: 100_000, chat_open: 100_000, report: REPORTS_PER_HOUR },
    });
    chats = createChatService({ db, publish, limits });
    messages = createMessageService({ db, publish, limits });
    safety = createSafetyService({ db, publish, limits });
  }, 60_000);

  afterAll(async () => {
    await chat?.stop();
    await drop();
  });

  async function newChat() {
    const buyer = newId();
    const seller = newId();
    const opened = await chats.open(buyer, newId(), seller);
    return { chatId: opened.chat.id, listingId: opened.chat.listing_id, buyer, seller };
  }

  const say = (sender: number, chatId: number, content: string, ref: string | null = randomUUID()) =>
    messages.send(sender, chatId, content, ref);

  describe("blocks", () => {
    it("refuse sends both ways with 403 blocked, store nothing, and lift with the unblock", async () => {
      const { chatId, buyer, seller } = await newChat();
      const before = await say(buyer, chatId, "is it still for sale?", "before-the-block");
      await safety.block(seller, buyer);
      const buyerEnd = await lastEventId(db, buyer);
      const sellerEnd = await lastEventId(db, seller);

      for (const [from, to] of [
        [buyer, seller],
        [seller, buyer],
      ] as const) {
        const refused = await chatError(say(from, chatId, `to ${to}`));
        expect([refused.status, refused.code]).toEqual([403, ErrorCode.blocked]);
      }
      // A retry of a send stored before the block still gets its message.
      expect(await say(buyer, chatId, "is it still for sale?", "before-the-block")).toEqual({
        ...before,
        created: false,
        becameMutual: undefined,
      });
      expect(await lastEventId(db, buyer)).toBe(buyerEnd);
      expect(await lastEventId(db, seller)).toBe(sellerEnd);
      const page = await messages.page(seller, chatId, undefined, 10);
      expect(page.messages.map((m) => m.content)).toEqual(["is it still for sale?"]);

      // The other direction too: the buyer's own block, then lifting one of two blocks leaves the other.
      await safety.block(buyer, seller);
      await safety.unblock(seller, buyer);
      expect((await chatError(say(seller, chatId, "still?"))).code).toBe(ErrorCode.blocked);
      await safety.unblock(buyer, seller);
      expect((await say(seller, chatId, "yes, still for sale")).created).toBe(true);
      expect((await say(buyer, chatId, "great")).created).toBe(true);
    });

    it("refuse opening a chat, new or existing, and edits, both ways; deletes and reads go on", async () => {
      const { chatId, listingId, buyer, seller } = await newChat();
      const mine = await say(buyer, chatId, "my offer: 50");
      const theirs = await say(seller, chatId, "no, 80");
      await safety.block(buyer, seller);

      // One at a time: a refusal made before it is awaited would be an unhandled rejection meanwhile.
      for (const open of [
        () => chats.open(buyer, listingId, seller),
        () => chats.open(buyer, newId(), seller),
        () => chats.open(seller, newId(), buyer),
      ]) {
        const refused = await chatError(open());
        expect([refused.status, refused.code]).toEqual([403, ErrorCode.blocked]);
      }
      expect((await chatError(messages.edit(buyer, mine.message.id, "my offer: 60"))).code).toBe(ErrorCode.blocked);
      expect((await chatError(messages.edit(seller, theirs.message.id, "ok, 50"))).code).toBe(ErrorCode.blocked);
      expect((await messages.page(seller, chatId, undefined, 10)).messages.map((m) => m.content)).toEqual([
        "no, 80",
        "my offer: 50",
      ]);

      expect((await messages.remove(seller, theirs.message.id)).deleted_at).not.toBeNull();
      expect((await chats.list(buyer, 10)).map((c) => c.id)).toEqual([chatId]);
      expect((await chats.list(seller, 10)).map((c) => c.id)).toEqual([chatId]);

      await safety.unblock(buyer, seller);
      expect((await chats.open(buyer, listingId, seller)).chat.id).toBe(chatId);
      expect((await messages.edit(buyer, mine.message.id, "my offer: 60")).content).toBe("my offer: 60");
    });

    it("a batch with a blocked send stores the others, in order, and answers each", async () => {
      const open = await newChat();
      const blocked = await newChat();
      await safety.block(blocked.seller, blocked.buyer);
      const before = await lastEventId(db, open.seller);
      const outcomes = await storeMessages(db, [
        { senderId: open.buyer, chatId: open.chatId, content: "one", clientMsgId: null },
        { senderId: blocked.buyer, chatId: blocked.chatId, content: "let me talk", clientMsgId: null },
        { senderId: open.seller, chatId: open.chatId, content: "two", clientMsgId: null },
        { senderId: blocked.seller, chatId: blocked.chatId, content: "nor me", clientMsgId: null },
        { senderId: open.buyer, chatId: open.chatId, content: "three", clientMsgId: null },
      ]);
      expect(outcomes.map((o) => o.status)).toEqual(["created", "blocked", "created", "blocked", "created"]);
      const events = await streamOf(db, open.seller, before);
      expect(events.map((e) => e.event_id)).toEqual([before + 1, before + 2, before + 3]);
      expect(events.map((e) => (e.type === "new_message" ? e.message.content : e.type))).toEqual([
        "one",
        "two",
        "three",
      ]);
      expect((await messages.page(blocked.buyer, blocked.chatId, undefined, 10)).messages).toEqual([]);
    });

    it("tell the blocker's stream only, once per change, as user_blocked and user_unblocked", async () => {
      const { buyer, seller } = await newChat();
      const ends = { buyer: await lastEventId(db, buyer), seller: await lastEventId(db, seller) };
      const publishedBefore = published.length;

      await safety.block(seller, buyer);
      await safety.block(seller, buyer);
      await safety.unblock(seller, buyer);
      await safety.unblock(seller, buyer);

      const expected: ChatEvent[] = [
        { type: "user_blocked", event_id: ends.seller + 1, user_id: buyer },
        { type: "user_unblocked", event_id: ends.seller + 2, user_id: buyer },
      ];
      expect(published.slice(publishedBefore)).toEqual(expected.map((event) => ({ userId: seller, event })));
      // Read back (replays, polls, gap fills) exactly as published, the stream dense.
      expect(await streamOf(db, seller, ends.seller)).toEqual(expected);
      expect(await lastEventId(db, seller)).toBe(ends.seller + 2);
      // The blocked user is told nothing.
      expect(await lastEventId(db, buyer)).toBe(ends.buyer);

      // Recorded for the webhooks (CONTRACT §9): one row per change, in order, `data` as the webhook's.
      const logged = await rows<{ type: string; data: unknown }>(
        db,
        sql`select type, data from webhook_deliveries where type like 'user.%'
            and (data->>'blocker_id')::bigint = ${seller} order by id`,
      );
      expect(logged).toEqual([
        { type: "user.blocked", data: { blocker_id: seller, blocked_id: buyer } },
        { type: "user.unblocked", data: { blocker_id: seller, blocked_id: buyer } },
      ]);
    });

    it("list whom one blocks, refuse blocking oneself, and bound how many one blocks", async () => {
      const me = newId();
      const [first, second] = [newId(), newId()];
      expect(await safety.blocks(me)).toEqual({ blocks: [] });
      await safety.block(me, first);
      await safety.block(me, second);
      const { blocks } = await safety.blocks(me);
      expect(blocks.map((b) => b.user_id).sort()).toEqual([first, second].sort());
      for (const b of blocks) expect(b.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      // Anyone may be blocked, in a chat with them or not (the block above had none).
      expect(await safety.blocks(first)).toEqual({ blocks: [] });

      for (const self of [() => safety.block(me, me), () => safety.unblock(me, me)]) {
        expect((await chatError(self())).status).toBe(400);
      }
      // The bound, here 2: a third is refused, a repeat is not.
      expect(await blockUser(db, me, newId(), 2)).toEqual({ status: "too_many" });
      expect(await blockUser(db, me, first, 2)).toEqual({ status: "unchanged" });
    });

    it("let nothing cross a block: sends racing it land before user_blocked in the blocker's stream, or not at all", async () => {
      const { chatId, buyer, seller } = await newChat();
      const start = await lastEventId(db, seller);
      // Each send its own transaction, so that on PostgreSQL they run beside the block, not in one batch
      // (PGlite runs them one at a time, in the order asked: 20, the block, 20).
      const sendMany = (from: number) =>
        Array.from({ length: 20 }, (_, i) =>
          storeMessages(db, [{ senderId: buyer, chatId, content: `message ${from + i}`, clientMsgId: null }]),
        );
      const sending = sendMany(0);
      const blocking = safety.block(seller, buyer);
      sending.push(...sendMany(20));
      const [outcomes] = await Promise.all([Promise.all(sending).then((all) => all.flat()), blocking]);
      expect(outcomes.every((o) => o.status === "created" || o.status === "blocked")).toBe(true);

      const events = await streamOf(db, seller, start);
      expect(events.map((e) => e.event_id)).toEqual(events.map((_, i) => start + 1 + i));
      const blockedAt = events.findIndex((e) => e.type === "user_blocked");
      expect(blockedAt).toBeGreaterThanOrEqual(0);
      expect(events.slice(blockedAt + 1)).toEqual([]);
      // What got through is exactly what was answered `created`, all before the block.
      const stored = outcomes.flatMap((o) => (o.status === "created" ? [o.message.id] : []));
      const before = events.slice(0, blockedAt).map((e) => (e.type === "new_message" ? e.message.id : 0));
      expect(before.sort((a, b) => a - b)).toEqual(stored.sort((a, b) => a - b));
    });
  });

  describe("content rules' flags (stored by migration 0008's functions for the rules)", () => {
    it("are stored with the message, replaced by an edit, and never shown", async () => {
      const { chatId, buyer } = await newChat();
      const outcomes = await storeMessages(db, [
        { senderId: buyer, chatId, content: "call +1 202 555 0100", clientMsgId: null, flags: ["phone"] },
        { senderId: buyer, chatId, content: "no flags", clientMsgId: null },
      ]);
      const ids = outcomes.map((o) => (o.status === "created" ? o.message.id : 0));
      const flagsOf = async (id: number) =>
        (await rows<{ flags: string[] }>(db, sql`select flags from messages where id = ${id}`))[0]?.flags;
      expect(await flagsOf(ids[0]!)).toEqual(["phone"]);
      expect(await flagsOf(ids[1]!)).toEqual([]);
      for (const outcome of outcomes) expect(outcome.status === "created" && "flags" in outcome.message).toBe(false);

      const edited = await editMessage(db, buyer, ids[0]!, "call me at a@b.example", ["email", "phone"]);
      expect(edited.status === "changed" && "flags" in edited.message).toBe(false);
      expect(await flagsOf(ids[0]!)).toEqual(["email", "phone"]);
      await editMessage(db, buyer, ids[0]!, "nothing now", []);
      expect(await flagsOf(ids[0]!)).toEqual([]);
      const replayed = await streamOf(db, buyer);
      expect(replayed.some((e) => "message" in e && "flags" in e.message)).toBe(false);
    });
  });

  describe("who shares presence and typing", () => {
    const mutualOf = (outcomes: SendOutcome[]) => outcomes.map((o) => o.status === "created" && o.becameMutual);

    it("both wrote and neither blocks: told by the send that makes it so, asked by sharesPresence", async () => {
      const { chatId, buyer, seller } = await newChat();
      const outsider = newId();
      const shares = () => sharesPresence(db, chatId, buyer, seller);
      expect(await shares()).toBe(false);
      expect(await recentContactsOf(db, buyer, 100)).toEqual([]);

      expect((await say(buyer, chatId, "hello?")).becameMutual).toBe(false);
      expect(await shares()).toBe(false);
      expect(await recentContactsOf(db, seller, 100)).toEqual([]);

      expect((await say(seller, chatId, "hi!")).becameMutual).toBe(true);
      expect(await shares()).toBe(true);
      expect(await sharesPresence(db, chatId, seller, buyer)).toBe(true);
      expect(await sharesPresence(db, chatId, buyer, outsider)).toBe(false);
      expect(await sharesPresence(db, chatId, outsider, seller)).toBe(false);
      expect(await recentContactsOf(db, buyer, 100)).toEqual([seller]);
      expect(await recentContactsOf(db, seller, 100)).toEqual([buyer]);
      expect((await say(buyer, chatId, "again")).becameMutual).toBe(false);

      for (const [blocker, blocked] of [
        [buyer, seller],
        [seller, buyer],
      ] as const) {
        await safety.block(blocker, blocked);
        expect(await shares()).toBe(false);
        expect(await recentContactsOf(db, buyer, 100)).toEqual([]);
        expect(await recentContactsOf(db, seller, 100)).toEqual([]);
        await safety.unblock(blocker, blocked);
        expect(await shares()).toBe(true);
      }
    });

    it("keeps recent contacts to the window of the most recently active chats, newest first", async () => {
      const me = newId();
      const peers = [newId(), newId(), newId()];
      for (const peer of peers) {
        const { chat } = await chats.open(me, newId(), peer);
        await say(me, chat.id, "hi");
        await say(peer, chat.id, "hello");
      }
      // A newer chat where only the other side wrote takes a place in the window but is not a contact.
      const { chat: quiet } = await chats.open(newId(), newId(), me);
      await say(quiet.buyer_id, quiet.id, "anyone?");
      expect(await recentContactsOf(db, me, 100)).toEqual([...peers].reverse());
      expect(await recentContactsOf(db, me, 3)).toEqual([peers[2], peers[1]]);
    });

    it("in one batch, the send that makes both writers says so, once", async () => {
      const { chatId, buyer, seller } = await newChat();
      const sends = [buyer, buyer, seller, seller, buyer].map((senderId, i) => ({
        senderId,
        chatId,
        content: `${i}`,
        clientMsgId: null,
      }));
      expect(mutualOf(await storeMessages(db, sends))).toEqual([false, false, true, false, false]);
    });

    it("of two first messages sent at once, exactly one makes it mutual", async () => {
      for (let round = 0; round < 5; round++) {
        const { chatId, buyer, seller } = await newChat();
        const outcomes = await Promise.all(
          [buyer, seller].map((senderId) =>
            storeMessages(db, [{ senderId, chatId, content: "hi", clientMsgId: null }]),
          ),
        );
        expect(mutualOf(outcomes.flat()).filter(Boolean)).toHaveLength(1);
        expect(await sharesPresence(db, chatId, buyer, seller)).toBe(true);
      }
    });
  });

  describe("reports", () => {
    async function safetyEventOf(reportId: number) {
      return rows<{ data: unknown }>(
        db,
        sql`select data from webhook_deliveries where type = 'report.created'
            and (data->'report'->>'id')::bigint = ${reportId}`,
      );
    }

    it("keep the reported message as it was, whatever happens to it, and carry all of report.created", async () => {
      const { chatId, buyer, seller } = await newChat();
      const { message } = await say(seller, chatId, "pay me at evil.example first");
      const report = await safety.report(buyer, {
        reason: "scam",
        note: "asks to pay elsewhere",
        message_id: message.id,
      });
      expect(report.created).toBe(true);
      await messages.edit(seller, message.id, "a friendly message");
      await messages.remove(seller, message.id);

      const [stored] = await rows<Record<string, unknown>>(
        db,
        sql`select reporter_id::int, reason, note, target_type, target_id::int, message from reports where id = ${report.id}`,
      );
      expect(stored).toEqual({
        reporter_id: buyer,
        reason: "scam",
        note: "asks to pay elsewhere",
        target_type: "message",
        target_id: message.id,
        message,
      });
      expect(await safetyEventOf(report.id)).toEqual([
        {
          data: {
            report: {
              id: report.id,
              reporter_id: buyer,
              reason: "scam",
              note: "asks to pay elsewhere",
              target: { type: "message", id: message.id },
              message,
            },
          },
        },
      ]);
    });

    it("answer the same id to a repeat of one reporter and target, and store it once", async () => {
      const { chatId, buyer, seller } = await newChat();
      await say(seller, chatId, "hello");
      for (const target of [{ chat_id: chatId }, { user_id: seller }]) {
        const first = await safety.report(buyer, { reason: "spam", ...target });
        const again = await safety.report(buyer, { reason: "harassment", note: "and more", ...target });
        expect(first.created).toBe(true);
        expect(again).toEqual({ id: first.id, created: false });
        expect(await safetyEventOf(first.id)).toHaveLength(1);
        const [kept] = await rows<{ reason: string; message: unknown }>(
          db,
          sql`select reason, message from reports where id = ${first.id}`,
        );
        expect(kept).toEqual({ reason: "spam", message: null });
      }
      // Another reporter of the same target is another report.
      const other = await safety.report(seller, { reason: "other", chat_id: chatId });
      expect(other.created).toBe(true);
    });

    it("404 for what the reporter takes no part in, 400 for themselves and their own message", async () => {
      const { chatId, buyer, seller } = await newChat();
      const { message } = await say(buyer, chatId, "hi");
      const outsider = newId();
      for (const [reporter, target] of [
        [outsider, { message_id: message.id }],
        [outsider, { chat_id: chatId }],
        [outsider, { user_id: seller }],
        [buyer, { message_id: 987_654_321 }],
        [buyer, { chat_id: 987_654_321 }],
        [buyer, { user_id: outsider }],
      ] as const) {
        const refused = await chatError(safety.report(reporter, { reason: "spam", ...target }));
        expect([refused.status, refused.code], JSON.stringify(target)).toEqual([404, ErrorCode.notFound]);
      }
      expect((await chatError(safety.report(buyer, { reason: "spam", message_id: message.id }))).status).toBe(400);
      expect((await chatError(safety.report(buyer, { reason: "spam", user_id: buyer }))).status).toBe(400);
      // A user is reportable by their chat partner in either role.
      expect((await safety.report(seller, { reason: "spam", user_id: buyer })).created).toBe(true);
    });

    it("count only new reports against the hourly limit", async () => {
      const reporter = newId();
      const targets: number[] = [];
      for (let i = 0; i <= REPORTS_PER_HOUR; i++) {
        const peer = newId();
        const { chat: opened } = await chats.open(reporter, newId(), peer);
        await say(peer, opened.id, "buy now");
        targets.push(peer);
      }
      // Refusals and repeats do not count.
      await chatError(safety.report(reporter, { reason: "spam", user_id: newId() }));
      const first = await safety.report(reporter, { reason: "spam", user_id: targets[0]! });
      for (let i = 0; i < REPORTS_PER_HOUR; i++) {
        expect(await safety.report(reporter, { reason: "spam", user_id: targets[0]! })).toEqual({
          id: first.id,
          created: false,
        });
      }
      for (let i = 1; i < REPORTS_PER_HOUR; i++) {
        expect((await safety.report(reporter, { reason: "spam", user_id: targets[i]! })).created).toBe(true);
      }
      const limited = await chatError(safety.report(reporter, { reason: "spam", user_id: targets[REPORTS_PER_HOUR]! }));
      expect(limited).toBeInstanceOf(RateLimitedError);
      expect(limited.message).toContain("reports");
      // Past the limit, a repeat is still answered, and nothing new was stored.
      expect((await safety.report(reporter, { reason: "spam", user_id: targets[0]! })).id).toBe(first.id);
      const [count] = await rows<{ n: number }>(
        db,
        sql`select count(*)::int as n from reports where reporter_id = ${reporter}`,
      );
      expect(count?.n).toBe(REPORTS_PER_HOUR);
    });
  });

  describe("over HTTP and WebSocket", () => {
    async function chatOverHttp() {
      const buyer = newId();
      const seller = newId();
      const opened = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: newId(), seller_id: seller });
      expect(opened.status).toBe(201);
      return { chatId: opened.body.id as number, listingId: opened.body.listing_id as number, buyer, seller };
    }
    const post = (userId: number, chatId: number, content: string) =>
      chat.api(userId, "POST", `/api/v1/chats/${chatId}/messages`, { content, client_msg_id: randomUUID() });

    it("block and unblock: 204, idempotent, listed; 400 for oneself or a bad id", async () => {
      const me = newId();
      const other = newId();
      for (let i = 0; i < 2; i++) {
        const blocked = await chat.api(me, "POST", `/api/v1/users/${other}/block`);
        expect([blocked.status, blocked.body]).toEqual([204, undefined]);
      }
      const listed = await chat.api(me, "GET", "/api/v1/blocks");
      expect(listed.status).toBe(200);
      expect(listed.body).toEqual({ blocks: [{ user_id: other, created_at: expect.any(String) }] });
      for (let i = 0; i < 2; i++)
        expect((await chat.api(me, "DELETE", `/api/v1/users/${other}/block`)).status).toBe(204);
      expect((await chat.api(me, "GET", "/api/v1/blocks")).body).toEqual({ blocks: [] });

      const self = await chat.api(me, "POST", `/api/v1/users/${me}/block`);
      expect([self.status, self.body.error.code]).toEqual([400, ErrorCode.validationFailed]);
      for (const bad of ["abc", "0", "-3", "1.5"]) {
        expect((await chat.api(me, "POST", `/api/v1/users/${bad}/block`)).status).toBe(400);
      }
    });

    it("refuse sends (REST and WS) and opens with 403 blocked; the blocker's devices alone hear of it", async () => {
      const { chatId, listingId, buyer, seller } = await chatOverHttp();
      const third = newId();
      const other = await chat.api(third, "POST", "/api/v1/chats", { listing_id: newId(), seller_id: buyer });
      const blockerPhone = await connect(chat, seller);
      const blockerLaptop = await connect(chat, seller);
      const blockedSocket = await connect(chat, buyer);

      expect((await chat.api(seller, "POST", `/api/v1/users/${buyer}/block`)).status).toBe(204);
      for (const socket of [blockerPhone, blockerLaptop]) {
        const heard = await socket.waitFor((f) => f.type === "user_blocked");
        expect(heard).toEqual({ type: "user_blocked", event_id: expect.any(Number), user_id: buyer });
      }

      for (const [from, to] of [
        [buyer, seller],
        [seller, buyer],
      ] as const) {
        const refused = await post(from, chatId, `to ${to}`);
        expect([refused.status, refused.body.error.code]).toEqual([403, ErrorCode.blocked]);
      }
      const reopen = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: listingId, seller_id: seller });
      expect([reopen.status, reopen.body.error.code]).toEqual([403, ErrorCode.blocked]);
      const ref = randomUUID();
      blockedSocket.send({ type: "send_message", chat_id: chatId, content: "hello?", client_msg_id: ref });
      const error = await blockedSocket.waitFor((f) => f.type === "error");
      expect(error).toMatchObject({ type: "error", code: ErrorCode.blocked, ref });
      expect(blockedSocket.ofType("ack")).toEqual([]);

      // The blocked user's next event is a third person's message: nothing of the block came before it.
      const eventsBefore = blockedSocket.eventIds().length;
      expect((await post(third, other.body.id, "from someone else")).status).toBe(201);
      const next = await blockedSocket.waitFor((f) => f.type === "new_message", 5_000);
      expect(next).toMatchObject({ chat_id: other.body.id });
      expect(blockedSocket.eventIds().length).toBe(eventsBefore + 1);
      expect(blockedSocket.frames.some((f) => f.type === "user_blocked" || f.type === "user_unblocked")).toBe(false);
      // Reads go on.
      expect((await chat.api(buyer, "GET", `/api/v1/chats/${chatId}/messages`)).status).toBe(200);
      for (const socket of [blockerPhone, blockerLaptop, blockedSocket]) await socket.close();
    });

    it("replays and polls user_blocked / user_unblocked in order, the stream dense, live equal to replayed", async () => {
      const { buyer, seller } = await chatOverHttp();
      const start = (await chat.api(seller, "GET", "/api/v1/events")).body.last_event_id as number;
      const live = await connect(chat, seller, start);
      await chat.api(seller, "POST", `/api/v1/users/${buyer}/block`);
      await chat.api(seller, "DELETE", `/api/v1/users/${buyer}/block`);
      await chat.api(seller, "POST", `/api/v1/users/${buyer}/block`);
      await live.until(() => live.eventIds().length === 3);
      const liveEvents = live.frames.filter((f): f is ChatEvent => "event_id" in f);
      expect(liveEvents.map((e) => [e.type, e.event_id])).toEqual([
        ["user_blocked", start + 1],
        ["user_unblocked", start + 2],
        ["user_blocked", start + 3],
      ]);

      const polled = await chat.api(seller, "GET", `/api/v1/events?after=${start}`);
      expect(polled.body).toEqual({ events: liveEvents, last_event_id: start + 3, has_more: false });
      const replay: TestSocket = await connect(chat, seller, start);
      await replay.until(() => replay.eventIds().length === 3);
      expect(replay.frames.filter((f) => "event_id" in f)).toEqual(liveEvents);
      await live.close();
      await replay.close();
      await chat.api(seller, "DELETE", `/api/v1/users/${buyer}/block`);
    });

    it("reports: 201 then 200 with the same id; 400 and 404 that say what is wrong", async () => {
      const { chatId, buyer, seller } = await chatOverHttp();
      const sent = await post(seller, chatId, "hello");
      const first = await chat.api(buyer, "POST", "/api/v1/reports", { reason: "spam", message_id: sent.body.id });
      expect([first.status, first.body]).toEqual([201, { id: expect.any(Number) }]);
      const again = await chat.api(buyer, "POST", "/api/v1/reports", {
        reason: "other",
        note: "once more",
        message_id: sent.body.id,
      });
      expect([again.status, again.body]).toEqual([200, first.body]);

      for (const [body, says] of [
        [{ reason: "spam" }, "exactly one"],
        [{ reason: "spam", chat_id: chatId, user_id: seller }, "exactly one"],
        [{ reason: "boring", chat_id: chatId }, "reason"],
        [{ chat_id: chatId }, "reason"],
        [{ reason: "spam", chat_id: "12" }, "chat_id"],
        [{ reason: "spam", chat_id: chatId, note: "x".repeat(1001) }, "note"],
        [{ reason: "spam", chat_id: chatId, note: "nul \u0000" }, "note"],
      ] as const) {
        const bad = await chat.api(buyer, "POST", "/api/v1/reports", body);
        expect([bad.status, bad.body.error.code], JSON.stringify(body)).toEqual([400, ErrorCode.validationFailed]);
        expect(bad.body.error.message).toContain(says);
      }
      const longest = await chat.api(buyer, "POST", "/api/v1/reports", {
        reason: "spam",
        chat_id: chatId,
        note: "é".repeat(1000),
      });
      expect(longest.status).toBe(201);

      const outsider = newId();
      for (const body of [{ message_id: sent.body.id }, { chat_id: chatId }, { user_id: seller }]) {
        const missing = await chat.api(outsider, "POST", "/api/v1/reports", { reason: "spam", ...body });
        expect([missing.status, missing.body.error.code]).toEqual([404, ErrorCode.notFound]);
      }
    });
  });
});
