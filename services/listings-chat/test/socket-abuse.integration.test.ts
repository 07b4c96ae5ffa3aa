/**
 * Issue 22's floods by one socket, over real sockets on a real instance (CONTRACT §10): `mark_read` in a
 * burst is coalesced, never refused, and does not hold up the socket's other frames; `resume` replays at
 * most once per 10 s; a client that answers no ping but sends pongs of its own is dropped.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat } from "./support/harness.ts";

const HEARTBEAT_MS = 500;

describe.each(databaseTargets())("one socket's floods ($name)", (target) => {
  let chat: TestChat;
  let drop = async () => {};
  let nextUser = 80_000;

  beforeAll(async () => {
    const db = await target.create();
    drop = db.drop;
    chat = await startTestChat({
      database: db.options,
      overrides: { heartbeatIntervalMs: HEARTBEAT_MS, sendsPerMinute: 10_000, presenceLeaveGraceMs: 0 },
    });
  });

  afterAll(async () => {
    await chat?.stop();
    await drop();
  });

  async function chatWithMessages(count: number) {
    const buyer = ++nextUser;
    const seller = ++nextUser;
    const opened = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 1, seller_id: seller });
    const chatId = opened.body.id as number;
    const ids: number[] = [];
    for (let i = 0; i < count; i++) {
      const sent = await chat.api(seller, "POST", `/api/v1/chats/${chatId}/messages`, {
        content: `message ${i}`,
        client_msg_id: randomUUID(),
      });
      ids.push(sent.body.id as number);
    }
    return { buyer, seller, chatId, ids };
  }

  it("coalesces 2,000 mark_read frames into about one stored read a second, the highest id last", async () => {
    const { buyer, seller, chatId, ids } = await chatWithMessages(50);
    const reader = await connect(chat, buyer);
    const peer = await connect(chat, seller);
    const started = Date.now();
    for (let i = 0; i < 2_000; i++)
      reader.send({ type: "mark_read", chat_id: chatId, message_id: ids[i % ids.length]! });
    // A send queued behind the burst is not held up by the coalescing windows.
    reader.send({ type: "send_message", chat_id: chatId, content: "after the burst", client_msg_id: randomUUID() });
    await reader.waitFor((f) => f.type === "ack", 5_000);
    const ackedAfterMs = Date.now() - started;
    const highest = Math.max(...ids);
    await peer.waitFor((f) => f.type === "message_read" && f.message_id === highest, 5_000);
    const elapsedS = (Date.now() - started) / 1_000;
    const reads = peer.ofType("message_read");
    // At most one stored read per second of the burst, plus the first (stored at once).
    expect(reads.length).toBeLessThanOrEqual(Math.ceil(elapsedS) + 1);
    expect(reads.at(-1)?.message_id).toBe(highest);
    expect(reader.ofType("error")).toEqual([]);
    expect(ackedAfterMs).toBeLessThan(2_000);
    await Promise.all([reader.close(), peer.close()]);
  });

  it("replays at most once per 10 s per socket: 20 resumes send the stream once", async () => {
    const { buyer, ids } = await chatWithMessages(30);
    const socket = await connect(chat, buyer);
    for (let i = 0; i < 20; i++) socket.send({ type: "resume", after: 0 });
    // The first replays the whole stream (chat_created and 30 messages); the 19 others are refused.
    await socket.until(() => socket.ofType("error").length === 19 && socket.eventIds().length === ids.length + 1);
    expect(socket.ofType("error").every((e) => e.code === "rate_limited")).toBe(true);
    const retryAfter = (socket.ofType("error")[0] as { retry_after_ms?: number }).retry_after_ms ?? 0;
    expect(retryAfter).toBeGreaterThan(9_000);
    expect(retryAfter).toBeLessThanOrEqual(10_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(socket.eventIds()).toHaveLength(ids.length + 1);
    await socket.close();

    // The upgrade's after= counts as the first replay.
    const resumed = await connect(chat, buyer, 0);
    resumed.send({ type: "resume", after: 0 });
    await resumed.waitFor((f) => f.type === "error" && f.code === "rate_limited");
    await resumed.close();
  });

  it("drops a client that answers no ping, however many pongs of its own it sends", async () => {
    const user = ++nextUser;
    const ws = new WebSocket(chat.wsUrl, {
      headers: { "x-internal-token": chat.internalToken, "x-user-id": String(user) },
      autoPong: false,
    });
    const pongs = setInterval(() => {
      if (ws.readyState === WebSocket.OPEN) ws.pong(Buffer.from("alive"));
    }, HEARTBEAT_MS / 4);
    const closedAt = new Promise<number>((resolve) => ws.once("close", () => resolve(Date.now())));
    await new Promise((resolve) => ws.once("open", resolve));
    const opened = Date.now();
    const closed = await Promise.race([
      closedAt,
      new Promise<number>((r) => setTimeout(() => r(-1), 10 * HEARTBEAT_MS)),
    ]);
    clearInterval(pongs);
    ws.terminate();
    expect(closed).not.toBe(-1);
    // Two missed pongs: dropped at the third heartbeat, give or take one.
    expect(closed - opened).toBeLessThan(5 * HEARTBEAT_MS);

    // An honest client (ws answers every ping with its payload) stays.
    const honest = await connect(chat, ++nextUser);
    await new Promise((resolve) => setTimeout(resolve, 6 * HEARTBEAT_MS));
    expect(honest.ws.readyState).toBe(WebSocket.OPEN);
    await honest.close();
  });
});
