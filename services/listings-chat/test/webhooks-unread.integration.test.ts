/**
 * `notification.unread` (CONTRACT §9) from a real chat process on PostgreSQL with NOTIFY_UNREAD_AFTER_S=1, to a
 * real receiver: one per recipient and chat for a message left unread, with the chat's unread count and its
 * newest message cut to 200 code points; none when read in time; none again until read; none for a sender's
 * own messages; system messages count. And the sweep's query (lc_notify_unread's own SELECT, taken from the
 * function) reads the partial index, not the table, among 200,000 participant rows with nothing due.
 * "None" is checked after a sentinel: a message sent later in another chat, whose reminder arrived, and
 * nothing left pending, so that anything due before it would have been recorded and delivered too.
 * PostgreSQL only: skipped when neither DATABASE_URL nor CI is set; with CI and no DATABASE_URL it fails.
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { openDatabase } from "../src/db/client.ts";
import { type ChatProcess, spawnChat, until } from "./support/chat-process.ts";
import { databaseTargets } from "./support/databases.ts";
import { type Received, startWebhookReceiver, type WebhookReceiver } from "./support/webhook-receiver.ts";

const postgres = databaseTargets().find((t) => t.name === "postgres");

const UNREAD = {
  NOTIFY_UNREAD_AFTER_S: "1",
  WEBHOOK_POLL_MS: "100",
  WEBHOOK_RETRY_MIN_MS: "200",
  WEBHOOK_RETRY_MAX_MS: "1000",
  // Deliveries go at once, whatever else CI runs beside (yielding to a short CPU has tests of its own).
  WEBHOOK_YIELD_MAX_S: "0",
};

interface World {
  client: pg.Client;
  receiver: WebhookReceiver;
  chat: ChatProcess;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function newDatabase(): Promise<string> {
  const created = await postgres!.create();
  cleanups.push(created.drop);
  if (!("url" in created.options)) throw new Error("the PostgreSQL target has a URL");
  return created.options.url;
}

async function world(): Promise<World> {
  const url = await newDatabase();
  const receiver = await startWebhookReceiver();
  cleanups.push(() => receiver.close());
  const chat = await spawnChat({
    databaseUrl: url,
    token: randomUUID(),
    env: { WEBHOOK_URL: receiver.url, WEBHOOK_SECRET: receiver.secret, ...UNREAD },
  });
  cleanups.push(() => chat.kill());
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  cleanups.push(() => client.end());
  return { client, receiver, chat };
}

async function openChat(chat: ChatProcess, buyer: number, seller: number, listing: number): Promise<number> {
  const res = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: listing, seller_id: seller });
  expect(res.status).toBe(201);
  return res.body.id as number;
}

async function send(chat: ChatProcess, sender: number, chatId: number, content: string) {
  const res = await chat.api(sender, "POST", `/api/v1/chats/${chatId}/messages`, {
    content,
    client_msg_id: randomUUID(),
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as { id: number; content: string };
}

async function read(chat: ChatProcess, userId: number, chatId: number, messageId: number) {
  const res = await chat.api(userId, "POST", `/api/v1/chats/${chatId}/read`, { message_id: messageId });
  expect(res.status).toBe(200);
}

const reminders = (receiver: WebhookReceiver, userId: number, chatId: number): Received[] =>
  receiver.ofType("notification.unread", (d) => d.user_id === userId && d.chat_id === chatId);

let sentinels = 0;
/**
 * A message in a chat of two users of its own, sent now; returns once its reminder arrived and nothing is
 * pending: every reminder due before it has been recorded and delivered by then.
 */
async function settle({ chat, receiver, client }: World) {
  sentinels += 1;
  const [buyer, seller] = [900_000 + 2 * sentinels, 900_001 + 2 * sentinels];
  const chatId = await openChat(chat, buyer, seller, 990_000 + sentinels);
  await send(chat, buyer, chatId, "sentinel");
  await receiver.waitFor("notification.unread", (d) => d.user_id === seller && d.chat_id === chatId, 10_000);
  await until(
    async () =>
      (await client.query("select count(*)::int as n from webhook_deliveries where delivered_at is null")).rows[0].n ===
      0,
    10_000,
    "nothing pending",
    50,
  );
}

describe.runIf(postgres)("notification.unread", () => {
  it("one reminder for messages left unread: the count, the newest cut to 200 code points, never the sender", async () => {
    const w = await world();
    const { chat, receiver } = w;
    const [BUYER, SELLER] = [1, 2];
    const chatId = await openChat(chat, BUYER, SELLER, 3);
    const firstAt = Date.now();
    const first = await send(chat, BUYER, chatId, "is it still available?");
    // 300 code points (500 UTF-16 units): the first 200 are 100 astral ones and 100 ASCII letters.
    const long = `${"😀".repeat(100)}${"a".repeat(100)}${"𝄞".repeat(100)}`;
    expect([...long]).toHaveLength(300);
    const newest = await send(chat, BUYER, chatId, long);
    const got = await receiver.waitFor("notification.unread", (d) => d.chat_id === chatId, 10_000);
    const afterMs = got.at - firstAt;
    console.log(`notification.unread ${afterMs} ms after the first unread message (NOTIFY_UNREAD_AFTER_S=1)`);
    expect(afterMs).toBeGreaterThanOrEqual(1_000);
    expect(afterMs).toBeLessThan(3_000);
    expect(got.data).toEqual({
      user_id: SELLER,
      chat_id: chatId,
      unread_count: 2,
      last_message: expect.objectContaining({
        id: newest.id,
        chat_id: chatId,
        sender_id: BUYER,
        kind: "text",
        content: `${"😀".repeat(100)}${"a".repeat(100)}`,
      }),
    });
    expect(got.data.last_message.id).not.toBe(first.id);
    expect(got.verified).toBe(true);

    await settle(w);
    expect(reminders(receiver, SELLER, chatId)).toHaveLength(1);
    // The buyer wrote both: nothing unread for them, never a reminder.
    expect(reminders(receiver, BUYER, chatId)).toEqual([]);
  }, 60_000);

  it("none for a message read in time", async () => {
    const w = await world();
    const { chat, receiver } = w;
    const chatId = await openChat(chat, 11, 12, 13);
    const sentAt = Date.now();
    const m = await send(chat, 11, chatId, "read me quickly");
    await read(chat, 12, chatId, m.id);
    // And the other way: a reply, read in time by the buyer.
    const reply = await send(chat, 12, chatId, "read it");
    await read(chat, 11, chatId, reply.id);
    expect(Date.now() - sentAt, "both read within NOTIFY_UNREAD_AFTER_S").toBeLessThan(1_000);
    // The sentinel's message is sent after these: a reminder they were due would be recorded before its own.
    await settle(w);
    expect(reminders(receiver, 12, chatId)).toEqual([]);
    expect(reminders(receiver, 11, chatId)).toEqual([]);
    expect(receiver.ofType("message.read", (d) => d.chat_id === chatId)).toHaveLength(2);
  }, 60_000);

  it("no second reminder until the recipient reads; after the read, a new unread message brings a new one", async () => {
    const w = await world();
    const { chat, receiver } = w;
    const [BUYER, SELLER] = [21, 22];
    const chatId = await openChat(chat, BUYER, SELLER, 23);
    const m1 = await send(chat, BUYER, chatId, "one");
    const first = await receiver.waitFor("notification.unread", (d) => d.chat_id === chatId, 10_000);
    expect(first.data).toMatchObject({ user_id: SELLER, unread_count: 1, last_message: { id: m1.id } });

    const m2 = await send(chat, BUYER, chatId, "two");
    const m3 = await send(chat, BUYER, chatId, "three");
    // Past NOTIFY_UNREAD_AFTER_S for m2 and m3, then the sentinel.
    const m3At = Date.now();
    await until(() => Date.now() - m3At > 1_200, 2_000, "past the reminder's wait", 50);
    await settle(w);
    expect(reminders(receiver, SELLER, chatId)).toHaveLength(1);

    // Read up to m2 (m3 still unread): the wait starts again for what is still unread.
    await read(chat, SELLER, chatId, m2.id);
    const second = await receiver.waitFor(
      "notification.unread",
      (d) => d.chat_id === chatId && d.user_id === SELLER && d.last_message.id === m3.id,
      10_000,
    );
    expect(second.data.unread_count).toBe(1);

    await read(chat, SELLER, chatId, m3.id);
    const m4 = await send(chat, BUYER, chatId, "four");
    const third = await receiver.waitFor(
      "notification.unread",
      (d) => d.chat_id === chatId && d.user_id === SELLER && d.last_message.id === m4.id,
      10_000,
    );
    expect(third.data).toMatchObject({ user_id: SELLER, chat_id: chatId, unread_count: 1 });
    await settle(w);
    expect(reminders(receiver, SELLER, chatId).map((r) => r.data.last_message.id)).toEqual([m1.id, m3.id, m4.id]);
    expect(reminders(receiver, BUYER, chatId)).toEqual([]);
  }, 60_000);

  it("a reply reminds the other side only; a system message reminds both", async () => {
    const w = await world();
    const { chat, receiver } = w;
    const [BUYER, SELLER] = [31, 32];
    const chatId = await openChat(chat, BUYER, SELLER, 33);
    const question = await send(chat, BUYER, chatId, "question");
    await read(chat, SELLER, chatId, question.id);
    const answer = await send(chat, SELLER, chatId, "answer");
    const toBuyer = await receiver.waitFor("notification.unread", (d) => d.chat_id === chatId, 10_000);
    expect(toBuyer.data).toMatchObject({ user_id: BUYER, unread_count: 1, last_message: { id: answer.id } });
    await settle(w);
    expect(reminders(receiver, SELLER, chatId)).toEqual([]);

    await read(chat, BUYER, chatId, answer.id);
    const system = await chat.internal("POST", `/internal/chat/chats/${chatId}/messages`, {
      content: "Your item was reserved",
      data: { reservation: 5 },
    });
    expect(system.status).toBe(201);
    await receiver.until(
      () =>
        reminders(receiver, SELLER, chatId).length === 1 &&
        reminders(receiver, BUYER, chatId).some((r) => r.data.last_message.id === system.body.id),
      10_000,
      "the system message's reminders to both",
    );
    for (const r of [reminders(receiver, SELLER, chatId)[0]!, reminders(receiver, BUYER, chatId).at(-1)!]) {
      expect(r.data).toMatchObject({
        chat_id: chatId,
        unread_count: 1,
        last_message: { id: system.body.id, kind: "system", sender_id: null, content: "Your item was reserved" },
      });
    }
  }, 60_000);

  it("the sweep reads the partial index, not 200,000 participant rows", async () => {
    const url = await newDatabase();
    // Migrated as the service does, then closed: the plan is PostgreSQL's, with no instance running.
    const handle = await openDatabase({ url, poolSize: 1 });
    await handle.close();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    cleanups.push(() => client.end());
    // 100,000 chats, 200,000 participant rows: unread (5 each) and reminded already, so none waits; then 20 due.
    await client.query(`insert into chats (listing_id, buyer_id, seller_id)
      select 1000000 + i, 2000000 + i, 3000000 + i % 1000 from generate_series(1, 100000) as i`);
    await client.query(`insert into chat_participants (chat_id, user_id, role, last_activity_at, unread_count,
        unread_notified)
      select id, buyer_id, 'buyer', last_activity_at, 5, true from chats
      union all select id, seller_id, 'seller', last_activity_at, 5, true from chats`);
    await client.query(`update chat_participants set unread_since = now() - interval '1 hour', unread_notified = false
      where (chat_id, user_id) in (select chat_id, user_id from chat_participants order by chat_id limit 20)`);
    await client.query("analyze chats, chat_participants");
    expect((await client.query("show enable_seqscan")).rows[0].enable_seqscan).toBe("on");
    // The index holds only the rows waiting for a reminder.
    const predicate = await client.query<{ p: string | null }>(
      "select pg_get_expr(indpred, indrelid) as p from pg_index where indexrelid = 'chat_participants_unread_since_idx'::regclass",
    );
    expect(predicate.rows[0]!.p).toMatch(/unread_since IS NOT NULL/);

    // The sweep's SELECT as lc_notify_unread runs it, from the function's own source.
    const { rows } = await client.query<{ src: string }>(
      "select prosrc as src from pg_proc where proname = 'lc_notify_unread'",
    );
    expect(rows).toHaveLength(1);
    const select = rows[0]!.src.match(/SELECT p\.chat_id[\s\S]*?SKIP LOCKED/)?.[0];
    expect(select, "the sweep's SELECT in lc_notify_unread").toBeTruthy();
    const query = select!.replaceAll("p_after_s", "60").replaceAll("p_limit", "100");

    interface PlanNode {
      "Node Type": string;
      "Relation Name"?: string;
      "Index Name"?: string;
      "Shared Hit Blocks"?: number;
      "Shared Read Blocks"?: number;
      "Actual Rows"?: number;
      Plans?: PlanNode[];
    }
    const nodesOf = (plan: PlanNode): PlanNode[] => [plan, ...(plan.Plans ?? []).flatMap(nodesOf)];
    await client.query("begin");
    try {
      const explained = await client.query(`explain (analyze, buffers, format json) ${query}`);
      const plan = explained.rows[0]["QUERY PLAN"][0].Plan as PlanNode;
      const nodes = nodesOf(plan);
      const scans = nodes.filter((n) => n["Relation Name"] === "chat_participants");
      console.log(
        `sweep plan: ${nodes.map((n) => `${n["Node Type"]}${n["Index Name"] ? ` on ${n["Index Name"]}` : ""}`).join(" > ")}; ` +
          `${(plan["Shared Hit Blocks"] ?? 0) + (plan["Shared Read Blocks"] ?? 0)} buffers for ${plan["Actual Rows"]} rows`,
      );
      expect(scans.map((n) => n["Node Type"])).not.toContain("Seq Scan");
      expect(scans.map((n) => [n["Node Type"], n["Index Name"]])).toEqual([
        ["Index Scan", "chat_participants_unread_since_idx"],
      ]);
      expect(plan["Actual Rows"]).toBe(20);
      // A few index and heap pages for the 20 due rows, not the table's thousands.
      expect((plan["Shared Hit Blocks"] ?? 0) + (plan["Shared Read Blocks"] ?? 0)).toBeLessThan(100);
    } finally {
      await client.query("rollback");
    }
  }, 120_000);
});
