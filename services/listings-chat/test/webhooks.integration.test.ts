/**
 * Webhooks (CONTRACT §9) from a real chat process (`node src/main.ts`) on PostgreSQL to a real HTTP receiver
 * (support/webhook-receiver.ts) that checks every request with the `standardwebhooks` package: each type with
 * its data, a tampered body refused, nothing recorded without WEBHOOK_URL, a change rolled back never
 * delivered, the dead list and its retry route, and the counts in stats and /metrics. One basic path runs on
 * PGlite, in-process. PostgreSQL parts are skipped when neither DATABASE_URL nor CI is set; with CI and no
 * DATABASE_URL they fail (databases.ts).
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { availableParallelism, setPriority } from "node:os";
import pg from "pg";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { loadChatConfig } from "../src/env.ts";
import { startChatServer } from "../src/server.ts";
import { defaultPressureFiles, readStalledMicros } from "../src/webhooks/cpu-pressure.ts";
import { type ChatProcess, metricValue, spawnChat, until } from "./support/chat-process.ts";
import { databaseTargets } from "./support/databases.ts";
import {
  type Received,
  startWebhookReceiver,
  verifyWebhook,
  type WebhookReceiver,
} from "./support/webhook-receiver.ts";

const postgres = databaseTargets().find((t) => t.name === "postgres");

/** Quick retries and polls, so that a test waits for the service, not for its defaults. */
const QUICK = {
  WEBHOOK_RETRY_MIN_MS: "200",
  WEBHOOK_RETRY_MAX_MS: "1000",
  WEBHOOK_POLL_MS: "100",
  WEBHOOK_TIMEOUT_MS: "2000",
  // Deliveries go at once, whatever else CI runs beside (yielding to a short CPU has tests of its own).
  WEBHOOK_YIELD_MAX_S: "0",
};

const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

const listingBody = (sellerId: number, title: string) => ({
  seller_id: sellerId,
  title,
  price_minor: 9_900,
  currency: "EUR",
  image_url: null,
  url: "https://marketplace.example/listings/lamp",
  status: "active",
});

interface World {
  url: string;
  client: pg.Client;
  receiver: WebhookReceiver;
  chat: ChatProcess;
  token: string;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

/** A database of its own, a receiver, and a chat process (with WEBHOOK_URL unless `webhooks` is false). */
async function world(env: Record<string, string> = {}, webhooks = true): Promise<World> {
  const created = await postgres!.create();
  cleanups.push(created.drop);
  if (!("url" in created.options)) throw new Error("the PostgreSQL target has a URL");
  const url = created.options.url;
  const receiver = await startWebhookReceiver();
  cleanups.push(() => receiver.close());
  const token = randomUUID();
  const chat = await spawnChat({
    databaseUrl: url,
    token,
    env: webhooks ? { WEBHOOK_URL: receiver.url, WEBHOOK_SECRET: receiver.secret, ...QUICK, ...env } : env,
  });
  cleanups.push(() => chat.kill());
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  cleanups.push(() => client.end());
  return { url, client, receiver, chat, token };
}

/** Every delivery recorded in the database, as its webhook-id. */
async function recordedIds(client: pg.Client): Promise<string[]> {
  const { rows } = await client.query<{ id: string }>("select 'msg_' || id as id from webhook_deliveries order by id");
  return rows.map((r) => r.id);
}

/** Deliveries not yet delivered nor dead, counted in the database (stats are cached for up to 5 s). */
async function pendingIn(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ n: number }>(
    "select count(*)::int as n from webhook_deliveries where delivered_at is null and dead_at is null",
  );
  return rows[0]!.n;
}

async function stats(chat: ChatProcess): Promise<{ pending: number; dead: number; oldest_pending_s: number }> {
  const res = await chat.internal("GET", "/internal/chat/ws/stats");
  expect(res.status).toBe(200);
  return res.body.webhooks;
}

async function metrics(chat: ChatProcess): Promise<string> {
  const res = await chat.internal("GET", "/metrics");
  expect(res.status).toBe(200);
  return res.body as string;
}

/** Sends `content` as `sender`; the stored message. */
async function send(chat: ChatProcess, sender: number, chatId: number, content: string) {
  const res = await chat.api(sender, "POST", `/api/v1/chats/${chatId}/messages`, {
    content,
    client_msg_id: randomUUID(),
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body as { id: number; content: string };
}

const messageChat = (chatId: number, listingId: number, buyerId: number, sellerId: number) => ({
  id: chatId,
  listing_id: listingId,
  buyer_id: buyerId,
  seller_id: sellerId,
});

describe.runIf(postgres)("webhooks from a chat process on PostgreSQL", () => {
  it("reports every type of change, signed, with the contract's data, each delivered once", async () => {
    const { chat, receiver, client } = await world();
    const [LISTING, SELLER, BUYER] = [501, 601, 701];
    const startedAt = Date.now();
    const wait = (type: string, filter: (data: any) => boolean) => receiver.waitFor(type, filter, 10_000);

    expect(
      (await chat.internal("PUT", `/internal/chat/listings/${LISTING}`, listingBody(SELLER, "Desk lamp"))).status,
    ).toBe(200);
    const opened = await chat.api(BUYER, "POST", "/api/v1/chats", { listing_id: LISTING, seller_id: SELLER });
    expect(opened.status).toBe(201);
    const chatId = opened.body.id as number;
    const asMessageChat = messageChat(chatId, LISTING, BUYER, SELLER);

    // chat.created: the chat as §8 shows it, with its listing, without `peer` (a viewer's).
    const chatCreated = await wait("chat.created", (d) => d.chat?.id === chatId);
    expect(chatCreated.data.chat).toMatchObject({
      ...asMessageChat,
      listing: { id: LISTING, title: "Desk lamp", price_minor: 9_900, currency: "EUR", status: "active" },
    });
    expect(chatCreated.data.chat).not.toHaveProperty("peer");
    expect(chatCreated.data.chat.created_at).toMatch(ISO_UTC);

    // message.created with the phone rule's flag (the shipped rules flag a phone number).
    const phone = await send(chat, BUYER, chatId, "call me at +1 415 555 2671");
    const phoneCreated = await wait("message.created", (d) => d.message?.id === phone.id);
    expect(phoneCreated.data).toEqual({
      message: expect.objectContaining({
        id: phone.id,
        chat_id: chatId,
        sender_id: BUYER,
        kind: "text",
        content: "call me at +1 415 555 2671",
        deleted_at: null,
      }),
      chat: asMessageChat,
      flags: ["phone"],
    });

    // message.updated: the edit passes the same rules (now an e-mail address).
    const edited = await chat.api(BUYER, "PATCH", `/api/v1/messages/${phone.id}`, {
      content: "write to me@example.com",
    });
    expect(edited.status).toBe(200);
    const updated = await wait("message.updated", (d) => d.message?.id === phone.id);
    expect(updated.data).toEqual({
      message: expect.objectContaining({
        id: phone.id,
        content: "write to me@example.com",
        edited_at: expect.any(String),
      }),
      chat: asMessageChat,
      flags: ["email"],
    });

    // An unflagged reply, read by the buyer: message.read.
    const reply = await send(chat, SELLER, chatId, "hi, still available");
    const replyCreated = await wait("message.created", (d) => d.message?.id === reply.id);
    expect(replyCreated.data.flags).toEqual([]);
    expect((await chat.api(BUYER, "POST", `/api/v1/chats/${chatId}/read`, { message_id: reply.id })).status).toBe(200);
    const read = await wait("message.read", (d) => d.chat_id === chatId && d.user_id === BUYER);
    expect(read.data).toEqual({ chat_id: chatId, user_id: BUYER, message_id: reply.id, read_at: expect.any(String) });
    expect(read.data.read_at).toMatch(ISO_UTC);

    // message.deleted by its sender.
    expect((await chat.api(BUYER, "DELETE", `/api/v1/messages/${phone.id}`)).status).toBe(200);
    const deleted = await wait("message.deleted", (d) => d.message?.id === phone.id);
    expect(deleted.data.message).toMatchObject({ id: phone.id, content: "", deleted_by: "sender" });
    expect(deleted.data.message.deleted_at).toMatch(ISO_UTC);
    expect(deleted.data.chat).toEqual(asMessageChat);
    expect(Array.isArray(deleted.data.flags)).toBe(true);

    // report.created, with the message as it was when reported.
    const spam = await send(chat, BUYER, chatId, "cheaper at my shop");
    const reported = await chat.api(SELLER, "POST", "/api/v1/reports", {
      reason: "spam",
      note: "sells elsewhere",
      message_id: spam.id,
    });
    expect(reported.status).toBe(201);
    const report = await wait("report.created", (d) => d.report?.id === reported.body.id);
    expect(report.data).toEqual({
      report: {
        id: reported.body.id,
        reporter_id: SELLER,
        reason: "spam",
        note: "sells elsewhere",
        target: { type: "message", id: spam.id },
        message: expect.objectContaining({ id: spam.id, content: "cheaper at my shop", sender_id: BUYER }),
      },
    });

    // user.blocked and user.unblocked.
    expect((await chat.api(SELLER, "POST", `/api/v1/users/${BUYER}/block`)).status).toBe(204);
    expect((await wait("user.blocked", (d) => d.blocker_id === SELLER)).data).toEqual({
      blocker_id: SELLER,
      blocked_id: BUYER,
    });
    expect((await chat.api(SELLER, "DELETE", `/api/v1/users/${BUYER}/block`)).status).toBe(204);
    expect((await wait("user.unblocked", (d) => d.blocker_id === SELLER)).data).toEqual({
      blocker_id: SELLER,
      blocked_id: BUYER,
    });

    // A system message (the platform's): message.created, kind system, no sender.
    const system = await chat.internal("POST", `/internal/chat/chats/${chatId}/messages`, {
      content: "Offer accepted: 90 EUR",
      data: { offer_id: 7 },
      client_msg_id: randomUUID(),
    });
    expect(system.status).toBe(201);
    const systemCreated = await wait("message.created", (d) => d.message?.id === system.body.id);
    expect(systemCreated.data.message).toMatchObject({
      kind: "system",
      sender_id: null,
      content: "Offer accepted: 90 EUR",
      data: { offer_id: 7 },
    });
    expect(systemCreated.data.chat).toEqual(asMessageChat);

    // A platform delete: message.deleted, deleted_by platform.
    expect((await chat.internal("DELETE", `/internal/chat/messages/${spam.id}`, { reason: "spam" })).status).toBe(200);
    const removed = await wait("message.deleted", (d) => d.message?.id === spam.id);
    expect(removed.data.message).toMatchObject({ id: spam.id, content: "", deleted_by: "platform" });

    // chat.updated: a listing change reaching the chat, once for the chat.
    expect(
      (await chat.internal("PUT", `/internal/chat/listings/${LISTING}`, listingBody(SELLER, "Desk lamp, brass")))
        .status,
    ).toBe(200);
    const chatUpdated = await wait("chat.updated", (d) => d.chat?.listing?.title === "Desk lamp, brass");
    expect(chatUpdated.data.chat).toMatchObject({
      ...asMessageChat,
      listing: { id: LISTING, title: "Desk lamp, brass" },
    });
    expect(chatUpdated.data.chat).not.toHaveProperty("peer");

    // Everything recorded was delivered once, and nothing else came.
    await until(async () => (await pendingIn(client)) === 0, 10_000, "no delivery pending");
    const ids = await recordedIds(client);
    await receiver.waitForIds(ids, 10_000);
    expect([...receiver.acked.keys()].sort()).toEqual([...ids].sort());
    expect(receiver.duplicates()).toEqual([]);
    expect(receiver.ofType("chat.updated", (d) => d.chat?.listing?.title === "Desk lamp, brass")).toHaveLength(1);
    const types = [...receiver.acked.values()].map((r) => r.type);
    for (const type of [
      "chat.created",
      "chat.updated",
      "message.created",
      "message.updated",
      "message.deleted",
      "message.read",
      "report.created",
      "user.blocked",
      "user.unblocked",
    ]) {
      expect(types, type).toContain(type);
    }
    // Headers and envelope of every request: Standard Webhooks, JSON, the change's time.
    for (const r of receiver.received) {
      expect(r.verified, r.error).toBe(true);
      expect(r.webhookId).toMatch(/^msg_\d+$/);
      expect(r.headers["content-type"]).toMatch(/^application\/json/);
      expect(r.headers["webhook-signature"]).toMatch(/^v1,[A-Za-z0-9+/=]+/);
      expect(r.timestamp).toMatch(ISO_UTC);
      expect(Date.parse(r.timestamp)).toBeGreaterThanOrEqual(startedAt - 1_000);
      expect(Date.parse(r.timestamp)).toBeLessThanOrEqual(r.at + 1_000);
      expect(Math.abs(r.webhookTimestamp * 1000 - r.at)).toBeLessThan(5_000);
      expect(JSON.parse(r.body)).toEqual({ type: r.type, timestamp: r.timestamp, data: r.data });
    }
  }, 60_000);

  it("signs so that standardwebhooks verifies the body as sent, and refuses it tampered or with another secret", async () => {
    const { chat, receiver } = await world();
    const opened = await chat.api(11, "POST", "/api/v1/chats", { listing_id: 21, seller_id: 12 });
    expect(opened.status).toBe(201);
    const message = await send(chat, 11, opened.body.id, "the original body");
    const got: Received = await receiver.waitFor("message.created", (d) => d.message?.id === message.id, 10_000);
    expect(got.verified).toBe(true);
    expect(verifyWebhook(receiver.secret, got.body, got.headers)).toEqual(JSON.parse(got.body));

    const tampered = got.body.replace("the original body", "the original bodY");
    expect(tampered).not.toBe(got.body);
    expect(() => verifyWebhook(receiver.secret, tampered, got.headers)).toThrow();
    const otherSecret = `whsec_${Buffer.from("another secret of 32 bytes......").toString("base64")}`;
    expect(() => verifyWebhook(otherSecret, got.body, got.headers)).toThrow();
    const otherId = { ...got.headers, "webhook-id": `${got.webhookId}0` };
    expect(() => verifyWebhook(receiver.secret, got.body, otherId)).toThrow();
  }, 60_000);

  it("records nothing when WEBHOOK_URL is unset", async () => {
    const { chat, client, receiver } = await world({}, false);
    expect((await chat.internal("PUT", "/internal/chat/listings/31", listingBody(32, "Chair"))).status).toBe(200);
    const opened = await chat.api(33, "POST", "/api/v1/chats", { listing_id: 31, seller_id: 32 });
    expect(opened.status).toBe(201);
    const chatId = opened.body.id as number;
    const m = await send(chat, 33, chatId, "call +1 415 555 2671");
    await send(chat, 32, chatId, "ok");
    expect((await chat.api(32, "POST", `/api/v1/chats/${chatId}/read`, { message_id: m.id })).status).toBe(200);
    expect((await chat.api(33, "PATCH", `/api/v1/messages/${m.id}`, { content: "never mind" })).status).toBe(200);
    expect(
      (await chat.api(32, "POST", "/api/v1/reports", { reason: "other", note: null, message_id: m.id })).status,
    ).toBe(201);
    expect((await chat.api(32, "POST", "/api/v1/users/33/block")).status).toBe(204);
    expect((await chat.api(32, "DELETE", "/api/v1/users/33/block")).status).toBe(204);
    expect((await chat.api(33, "DELETE", `/api/v1/messages/${m.id}`)).status).toBe(200);
    expect((await chat.internal("PUT", "/internal/chat/listings/31", listingBody(32, "Chair, oak"))).status).toBe(200);
    const system = await chat.internal("POST", `/internal/chat/chats/${chatId}/messages`, { content: "Sold" });
    expect(system.status).toBe(201);
    expect((await client.query("select count(*)::int as n from webhook_deliveries")).rows[0].n).toBe(0);
    // The safety events the table replaced are not written either (if the table is still there).
    const { rows } = await client.query<{ n: number | null }>(
      "select case when to_regclass('safety_events') is null then null else 0 end as n",
    );
    if (rows[0]!.n !== null) {
      expect((await client.query("select count(*)::int as n from safety_events")).rows[0].n).toBe(0);
    }
    expect((await stats(chat)).pending).toBe(0);
    expect(receiver.received).toEqual([]);
  }, 60_000);

  it("never delivers a change that was rolled back; a committed one after it arrives", async () => {
    const { chat, client, receiver } = await world();
    const opened = await chat.api(41, "POST", "/api/v1/chats", { listing_id: 51, seller_id: 42 });
    expect(opened.status).toBe(201);
    const chatId = opened.body.id as number;
    await receiver.waitFor("chat.created", (d) => d.chat?.id === chatId, 10_000);

    // The instance with WEBHOOK_URL runs: its lease says webhooks are on, so a send records its delivery.
    const rolledBack = randomUUID();
    await client.query("begin");
    const sent = await client.query<{ status: string }>("select status from lc_send_messages($1::jsonb, true)", [
      JSON.stringify([[41, chatId, "rolled back", rolledBack, null]]),
    ]);
    expect(sent.rows.map((r) => r.status)).toContain("created");
    const inside = await client.query<{ id: string }>(
      "select 'msg_' || id as id from webhook_deliveries where data->'message'->>'client_msg_id' = $1",
      [rolledBack],
    );
    // Recorded in the transaction (else this test would prove nothing) …
    expect(inside.rows).toHaveLength(1);
    const rolledBackId = inside.rows[0]!.id;
    // … and held a moment, while the sender polls, then rolled back.
    await new Promise((resolve) => setTimeout(resolve, 500));
    await client.query("rollback");

    const committed = await send(chat, 41, chatId, "committed");
    await receiver.waitFor("message.created", (d) => d.message?.id === committed.id, 10_000);
    await until(async () => (await pendingIn(client)) === 0, 10_000, "no delivery pending");
    await receiver.waitForIds(await recordedIds(client), 10_000);
    expect(receiver.attempts(rolledBackId)).toBe(0);
    expect(receiver.received.filter((r) => r.data?.message?.client_msg_id === rolledBack)).toEqual([]);
    expect(receiver.received.filter((r) => r.body.includes("rolled back"))).toEqual([]);
  }, 60_000);

  it("lists the dead (past WEBHOOK_MAX_AGE_S) and sends them again on request", async () => {
    const { chat, receiver } = await world({
      WEBHOOK_MAX_AGE_S: "1",
      WEBHOOK_RETRY_MIN_MS: "100",
      WEBHOOK_RETRY_MAX_MS: "300",
    });
    receiver.behave("fail");
    const opened = await chat.api(61, "POST", "/api/v1/chats", { listing_id: 71, seller_id: 62 });
    expect(opened.status).toBe(201);
    const chatId = opened.body.id as number;
    for (const content of ["one", "two", "three"]) await send(chat, 61, chatId, content);

    type Dead = { webhook_id: string; type: string; attempts: number; last_error: string | null; created_at: string };
    const deadList = async (query = ""): Promise<Dead[]> => {
      const res = await chat.internal("GET", `/internal/chat/webhooks/dead${query}`);
      expect(res.status).toBe(200);
      return res.body.deliveries;
    };
    await until(async () => (await deadList()).length === 4, 20_000, "4 deliveries dead");
    const dead = await deadList();
    expect(dead.map((d) => d.type).sort()).toEqual([
      "chat.created",
      "message.created",
      "message.created",
      "message.created",
    ]);
    for (const d of dead) {
      expect(d.webhook_id).toMatch(/^msg_\d+$/);
      expect(d.attempts).toBeGreaterThanOrEqual(1);
      expect(d.attempts).toBe(receiver.attempts(d.webhook_id));
      expect(d.last_error).toMatch(/500/);
      expect(d.created_at).toMatch(ISO_UTC);
    }
    expect(await deadList("?limit=2")).toHaveLength(2);
    expect((await fetch(`${chat.baseUrl}/internal/chat/webhooks/dead`)).status).toBe(401);
    expect(
      (await fetch(`${chat.baseUrl}/internal/chat/webhooks/dead/retry`, { method: "POST", body: "{}" })).status,
    ).toBe(401);
    await until(
      async () => {
        const s = await stats(chat);
        return s.pending === 0 && s.dead === 4;
      },
      10_000,
      "stats: 4 dead, none pending",
      200,
    );
    await until(
      async () => metricValue(await metrics(chat), "listings_chat_webhooks_dead") === 4,
      10_000,
      "the dead gauge at 4",
      200,
    );
    const text = await metrics(chat);
    expect(metricValue(text, "listings_chat_webhook_deliveries_total", { outcome: "dead" })).toBe(4);
    expect(metricValue(text, "listings_chat_webhook_deliveries_total", { outcome: "failed" })).toBeGreaterThanOrEqual(
      4,
    );
    expect(metricValue(text, "listings_chat_webhook_deliveries_total", { outcome: "delivered" })).toBe(0);

    // Healthy again: one named, then the rest.
    receiver.behave("ok");
    const [first, ...rest] = dead;
    const one = await chat.internal("POST", "/internal/chat/webhooks/dead/retry", { webhook_ids: [first!.webhook_id] });
    expect(one).toEqual({ status: 200, body: { requeued: 1 } });
    await receiver.waitForIds([first!.webhook_id], 10_000);
    expect((await deadList()).map((d) => d.webhook_id).sort()).toEqual(rest.map((d) => d.webhook_id).sort());
    for (const d of rest) expect(receiver.acked.has(d.webhook_id)).toBe(false);
    const all = await chat.internal("POST", "/internal/chat/webhooks/dead/retry");
    expect(all).toEqual({ status: 200, body: { requeued: 3 } });
    await receiver.waitForIds(
      rest.map((d) => d.webhook_id),
      10_000,
    );
    expect(await deadList()).toEqual([]);
    await until(
      async () => {
        const s = await stats(chat);
        return s.pending === 0 && s.dead === 0;
      },
      10_000,
      "stats: none dead, none pending",
      200,
    );
    expect(receiver.bodyMismatches()).toEqual([]);
    await until(
      async () =>
        metricValue(await metrics(chat), "listings_chat_webhook_deliveries_total", { outcome: "delivered" }) === 4,
      5_000,
      "4 delivered in /metrics",
    );
  }, 60_000);

  it("shows pending, dead, the oldest's age and the delivered count in stats and /metrics", async () => {
    const { chat, receiver, client } = await world();
    const opened = await chat.api(81, "POST", "/api/v1/chats", { listing_id: 91, seller_id: 82 });
    expect(opened.status).toBe(201);
    const chatId = opened.body.id as number;
    for (let i = 0; i < 5; i++) await send(chat, 81, chatId, `message ${i}`);
    await until(async () => (await pendingIn(client)) === 0, 10_000, "no delivery pending");
    await receiver.waitForIds(await recordedIds(client), 10_000);
    expect(receiver.acked.size).toBe(6);
    await until(async () => (await stats(chat)).pending === 0, 10_000, "stats: none pending", 200);
    expect(await stats(chat)).toEqual({ pending: 0, dead: 0, oldest_pending_s: 0 });
    await until(
      async () =>
        metricValue(await metrics(chat), "listings_chat_webhook_deliveries_total", { outcome: "delivered" }) === 6,
      5_000,
      "6 delivered in /metrics",
    );
    const healthy = await metrics(chat);
    expect(metricValue(healthy, "listings_chat_webhook_deliveries_total", { outcome: "delivered" })).toBe(6);
    expect(metricValue(healthy, "listings_chat_webhook_delivery_lag_seconds_count")).toBe(6);
    // Lag from the change's record to its 2xx: well under 10 s here.
    expect(metricValue(healthy, "listings_chat_webhook_delivery_lag_seconds_sum")).toBeLessThan(6 * 10);

    // The receiver fails: a backlog that ages.
    receiver.behave("fail");
    for (let i = 0; i < 3; i++) await send(chat, 81, chatId, `held ${i}`);
    await until(
      async () => {
        const s = await stats(chat);
        return s.pending === 3 && s.oldest_pending_s >= 2;
      },
      10_000,
      "3 pending, the oldest 2 s old",
      100,
    );
    await until(
      async () => {
        const text = await metrics(chat);
        return (
          metricValue(text, "listings_chat_webhooks_pending") === 3 &&
          metricValue(text, "listings_chat_webhooks_oldest_pending_seconds") >= 1
        );
      },
      12_000,
      "the pending gauges (read at most every 5 s)",
      250,
    );
    const failing = await metrics(chat);
    expect(
      metricValue(failing, "listings_chat_webhook_deliveries_total", { outcome: "failed" }),
    ).toBeGreaterThanOrEqual(3);
    expect(metricValue(failing, "listings_chat_webhooks_dead")).toBe(0);

    receiver.behave("ok");
    await until(async () => (await pendingIn(client)) === 0, 15_000, "the backlog delivered");
    await receiver.waitForIds(await recordedIds(client), 10_000);
    await until(async () => (await stats(chat)).pending === 0, 10_000, "stats: none pending", 200);
    expect(await stats(chat)).toEqual({ pending: 0, dead: 0, oldest_pending_s: 0 });
    await until(
      async () =>
        metricValue(await metrics(chat), "listings_chat_webhook_deliveries_total", { outcome: "delivered" }) === 9,
      5_000,
      "9 delivered in /metrics",
    );
  }, 60_000);
});

/** Whether a chat process here can read CPU pressure (Linux PSI), as cpu-pressure.ts looks for it. */
const pressureReadable = defaultPressureFiles().some((file) => readStalledMicros(file) !== undefined);

describe.runIf(postgres && pressureReadable)("webhooks while the CPU is short (Linux PSI)", () => {
  it("sends only the unread reminders while every core is busy, and the rest once the load ends", async () => {
    const { chat, receiver } = await world({ WEBHOOK_YIELD_MAX_S: "60", NOTIFY_UNREAD_AFTER_S: "1" });
    const [LISTING, SELLER, BUYER] = [511, 611, 711];
    const yielding = async () => metricValue(await metrics(chat), "listings_chat_webhooks_yielding");
    expect(await yielding()).toBe(0);

    // A busy loop on every core and one more (each ends by itself after 40 s, and is killed before that).
    // At the lowest priority, so that CI's other files running beside are not slowed: a runnable task that waits
    // counts as pressure whatever its priority, and with one more loop than cores one always waits.
    const burners = Array.from({ length: availableParallelism() + 1 }, () => {
      const burner = spawn(process.execPath, ["-e", "const end = Date.now() + 40000; while (Date.now() < end);"], {
        stdio: "ignore",
      });
      if (burner.pid) setPriority(burner.pid, 19);
      return burner;
    });
    const burning = async () => {
      for (const burner of burners) burner.kill("SIGKILL");
      await Promise.all(
        burners.map((b) => (b.exitCode ?? b.signalCode) !== null || new Promise((r) => b.once("exit", r))),
      );
    };
    cleanups.push(burning);
    // A user keeps using the chat meanwhile (the sender yields to users, not to the load alone).
    let browsing = true;
    const browser = (async () => {
      while (browsing) {
        await chat.api(BUYER, "GET", "/api/v1/chats");
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    cleanups.push(async () => {
      browsing = false;
      await browser;
    });
    await until(async () => (await yielding()) === 1, 15_000, "the sender yielding to the load", 200);
    const opened = await chat.api(BUYER, "POST", "/api/v1/chats", { listing_id: LISTING, seller_id: SELLER });
    expect(opened.status).toBe(201);
    const sent = await send(chat, BUYER, opened.body.id, "Still for sale?");
    // The seller's reminder comes (NOTIFY_UNREAD_AFTER_S=1: within the contract's 10 s), the rest waits.
    const reminder = await receiver.waitFor("notification.unread", (d) => d.chat_id === opened.body.id, 15_000);
    expect(reminder.data.user_id).toBe(SELLER);
    expect(await yielding()).toBe(1);
    expect(receiver.ofType("message.created", (d) => d.message?.id === sent.id)).toEqual([]);
    expect(receiver.ofType("chat.created", (d) => d.chat?.id === opened.body.id)).toEqual([]);

    await burning();
    browsing = false;
    await browser;
    // Within seconds once the CPU is free again (CI's other files may still press it: then WEBHOOK_YIELD_MAX_S).
    await receiver.waitFor("message.created", (d) => d.message?.id === sent.id, 70_000);
    await receiver.waitFor("chat.created", (d) => d.chat?.id === opened.body.id, 5_000);
  }, 120_000);
});

describe("webhooks on PGlite, in-process", () => {
  it("delivers a message.created signed, from startChatServer", async () => {
    const receiver = await startWebhookReceiver();
    cleanups.push(() => receiver.close());
    const token = randomUUID();
    const config = loadChatConfig({
      NODE_ENV: "test",
      INTERNAL_TOKEN: token,
      WEBHOOK_URL: receiver.url,
      WEBHOOK_SECRET: receiver.secret,
      ...QUICK,
    });
    const server = await startChatServer(
      { ...config, port: 0, host: "127.0.0.1", database: { inMemory: true } },
      pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
    );
    cleanups.push(() => server.stop());
    const api = async (userId: number, method: string, path: string, body?: unknown) => {
      const res = await fetch(`http://127.0.0.1:${server.port}${path}`, {
        method,
        headers: { "x-internal-token": token, "x-user-id": String(userId), "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as any };
    };
    const opened = await api(1, "POST", "/api/v1/chats", { listing_id: 3, seller_id: 2 });
    expect(opened.status).toBe(201);
    const sent = await api(1, "POST", `/api/v1/chats/${opened.body.id}/messages`, {
      content: "hello on PGlite",
      client_msg_id: randomUUID(),
    });
    expect(sent.status).toBe(201);
    const got = await receiver.waitFor("message.created", (d) => d.message?.id === sent.body.id, 10_000);
    expect(got.verified).toBe(true);
    expect(got.data).toEqual({
      message: expect.objectContaining({ id: sent.body.id, content: "hello on PGlite", sender_id: 1 }),
      chat: messageChat(opened.body.id, 3, 1, 2),
      flags: [],
    });
    await receiver.waitFor("chat.created", (d) => d.chat?.id === opened.body.id, 10_000);
    expect(receiver.duplicates()).toEqual([]);
  }, 60_000);
});
