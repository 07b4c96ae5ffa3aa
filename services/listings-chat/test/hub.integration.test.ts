import { randomUUID } from "node:crypto";
import type { ServerFrame } from "@listings-chat/shared";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { databaseTargets } from "./support/databases.ts";
import { connect, openAsContacts, startTestChat, type TestChat, TestSocket } from "./support/harness.ts";

type NewMessage = Extract<ServerFrame, { type: "new_message" }>;
const isMessage =
  (content: string) =>
  (f: ServerFrame): f is NewMessage =>
    f.type === "new_message" && f.message.content === content;

describe.each(databaseTargets())("hub over real sockets on $name", (target) => {
  let chat: TestChat;
  let drop: () => Promise<void>;
  // Each test uses its own users, so that counts and rate limits never leak between tests.
  let nextUser = 1000;
  const users = () => {
    nextUser += 10;
    return [nextUser, nextUser + 1, nextUser + 2] as const;
  };

  beforeAll(async () => {
    const db = await target.create();
    drop = db.drop;
    // "Offline" after a short grace (hub.ts), so that the tests of presence do not wait the real one.
    chat = await startTestChat({
      database: db.options,
      overrides: { heartbeatIntervalMs: 150, presenceLeaveGraceMs: 200 },
    });
  });

  afterAll(async () => {
    await chat?.stop();
    await drop?.();
  });

  async function openChat(buyer: number, seller: number, listing = 1): Promise<number> {
    const res = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: listing, seller_id: seller });
    expect([200, 201]).toContain(res.status);
    return res.body.id;
  }

  /** Makes `socket` receive an event that comes after everything sent so far: then anything earlier has arrived too. */
  async function syncPoint(socket: TestSocket, userId: number, listing: number) {
    const partner = userId + 5000;
    const res = await chat.api(userId, "POST", "/api/v1/chats", { listing_id: listing, seller_id: partner });
    await socket.waitFor((f) => f.type === "chat_created" && f.chat.id === res.body.id);
  }

  it("delivers to every socket of both participants and to no one else", async () => {
    const [buyer, seller, outsider] = users();
    const buyerSockets = [await connect(chat, buyer), await connect(chat, buyer)];
    const sellerSockets = [await connect(chat, seller), await connect(chat, seller), await connect(chat, seller)];
    const outsiderSocket = await connect(chat, outsider);
    const participants = [...buyerSockets, ...sellerSockets];

    const chatId = await openChat(buyer, seller);
    for (const s of participants) await s.waitFor((f) => f.type === "chat_created" && f.chat.id === chatId);

    const rest = await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "via rest",
      client_msg_id: randomUUID(),
    });
    expect(rest.status).toBe(201);
    const ref = randomUUID();
    sellerSockets[0]?.send({ type: "send_message", chat_id: chatId, content: "via ws", client_msg_id: ref });
    const ack = await sellerSockets[0]!.waitFor((f) => f.type === "ack");
    expect(ack).toMatchObject({
      ref,
      message: { chat_id: chatId, sender_id: seller, content: "via ws", client_msg_id: ref },
    });

    for (const s of participants) {
      const viaRest = await s.waitFor(isMessage("via rest"));
      const viaWs = await s.waitFor(isMessage("via ws"));
      expect(viaRest.event_id).toBeLessThan(viaWs.event_id);
      expect(viaWs.message).toEqual(ack.type === "ack" ? ack.message : undefined);
    }
    // Only the sending socket gets the ack.
    for (const s of [...buyerSockets, ...sellerSockets.slice(1)]) expect(s.ofType("ack")).toHaveLength(0);

    await syncPoint(outsiderSocket, outsider, 99);
    expect(outsiderSocket.frames.some((f) => "chat_id" in f && f.chat_id === chatId)).toBe(false);
    expect(outsiderSocket.frames.some((f) => f.type === "chat_created" && f.chat.id === chatId)).toBe(false);

    // What was stored is what was told.
    const page = await chat.api(seller, "GET", `/api/v1/chats/${chatId}/messages`);
    expect(page.body.messages.map((m: { content: string }) => m.content)).toEqual(["via ws", "via rest"]);
    await Promise.all([...participants, outsiderSocket].map((s) => s.close()));
  });

  it("stores a repeated client_msg_id once, over WebSocket and REST alike", async () => {
    const [buyer, seller] = users();
    const chatId = await openChat(buyer, seller);
    const watcher = await connect(chat, seller);
    const sender = await connect(chat, buyer);
    const ref = randomUUID();
    sender.send({ type: "send_message", chat_id: chatId, content: "once", client_msg_id: ref });
    sender.send({ type: "send_message", chat_id: chatId, content: "once", client_msg_id: ref });
    await sender.until(() => sender.ofType("ack").length === 2);
    const [first, second] = sender.ofType("ack");
    expect(second?.message).toEqual(first?.message);
    const again = await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "once",
      client_msg_id: ref,
    });
    expect(again.status).toBe(200);
    expect(again.body).toEqual(first?.message);

    await syncPoint(watcher, seller, 98);
    expect(watcher.ofType("new_message").filter((f) => f.message.client_msg_id === ref)).toHaveLength(1);
    const page = await chat.api(seller, "GET", `/api/v1/chats/${chatId}/messages`);
    expect(page.body.messages).toHaveLength(1);
    await Promise.all([watcher.close(), sender.close()]);
  });

  it("answers bad frames with an error frame and keeps the socket open", async () => {
    const [user, partner] = users();
    const chatId = await openChat(user, partner);
    const socket = await connect(chat, user);
    const errorsSoFar = () => socket.ofType("error").length;

    socket.send("{not json");
    await socket.until(() => errorsSoFar() === 1);
    socket.send({ type: "shout", client_msg_id: "r1" });
    await socket.until(() => errorsSoFar() === 2);
    socket.send({ type: "send_message", chat_id: chatId, content: "", client_msg_id: "r2" });
    await socket.until(() => errorsSoFar() === 3);
    socket.send({ type: "send_message", chat_id: chatId, content: "x".repeat(4001), client_msg_id: "r3" });
    await socket.until(() => errorsSoFar() === 4);
    socket.send({ type: "send_message", chat_id: 987654, content: "hello", client_msg_id: "r4" });
    await socket.until(() => errorsSoFar() === 5);
    socket.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    await socket.until(() => errorsSoFar() === 6);
    socket.send({ type: "send_message", chat_id: chatId, content: "nul \u0000", client_msg_id: "r7" });
    await socket.until(() => errorsSoFar() === 7);

    expect(socket.ofType("error").map((e) => [e.code, e.ref])).toEqual([
      ["bad_json", undefined],
      ["unknown_type", "r1"],
      ["validation_failed", "r2"],
      ["validation_failed", "r3"],
      ["not_found", "r4"],
      ["bad_request", undefined],
      ["validation_failed", "r7"],
    ]);
    for (const e of socket.ofType("error")) expect(e.message.length).toBeGreaterThan(5);
    socket.send({ type: "ping" });
    await socket.waitFor((f) => f.type === "pong");
    expect(socket.ws.readyState).toBe(WebSocket.OPEN);
    await socket.close();
  });

  it("greets first: frames sent before the greeting are answered after it", async () => {
    const [user] = users();
    const ws = new WebSocket(chat.wsUrl, {
      headers: { "x-internal-token": chat.internalToken, "x-user-id": String(user) },
    });
    const socket = new TestSocket(ws);
    ws.on("open", () => {
      ws.send(JSON.stringify({ type: "ping" }));
      ws.send("{not json");
    });
    await socket.waitFor((f) => f.type === "error");
    expect(socket.frames.map((f) => f.type)).toEqual(["connected", "pong", "error"]);
    await socket.close();
  });

  it("closes with 1009 on a frame over 64 KiB", async () => {
    const [user] = users();
    const socket = await connect(chat, user);
    socket.send({ type: "ping", padding: "x".repeat(64 * 1024) });
    const closed = await socket.closed;
    expect(closed.code).toBe(1009);
  });

  it("limits sends to 60 a minute per user across REST and WebSocket", async () => {
    const [buyer, seller] = users();
    const chatId = await openChat(buyer, seller);
    const socket = await connect(chat, buyer);
    for (let i = 0; i < 30; i++) {
      const res = await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
        content: `r${i}`,
        client_msg_id: randomUUID(),
      });
      expect(res.status).toBe(201);
    }
    for (let i = 0; i < 30; i++)
      socket.send({ type: "send_message", chat_id: chatId, content: `w${i}`, client_msg_id: randomUUID() });
    await socket.until(() => socket.ofType("ack").length === 30);

    const refused = await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "61st",
      client_msg_id: randomUUID(),
    });
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe("rate_limited");
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    const ref = randomUUID();
    socket.send({ type: "send_message", chat_id: chatId, content: "62nd", client_msg_id: ref });
    const error = await socket.waitFor((f) => f.type === "error");
    expect(error).toMatchObject({ code: "rate_limited", ref });
    expect((error as { retry_after_ms?: number }).retry_after_ms).toBeGreaterThan(0);

    const page = await chat.api(seller, "GET", `/api/v1/chats/${chatId}/messages?limit=100`);
    expect(page.body.messages).toHaveLength(60);
    // The other participant is not limited by the buyer's sends.
    const other = await chat.api(seller, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "mine",
      client_msg_id: randomUUID(),
    });
    expect(other.status).toBe(201);
    await socket.close();
  });

  it("relays 'typing' to the other participant at most once per 2 s per chat, and 'stopped' at once, once", async () => {
    const [buyer, seller, outsider] = users();
    // Typing passes between contacts only: two people who have both written in the chat (CONTRACT §10).
    const chatId = await openAsContacts(chat, buyer, seller);
    const typist = await connect(chat, buyer);
    const reader = await connect(chat, seller);
    const stranger = await connect(chat, outsider);
    typist.send({ type: "typing", chat_id: chatId, is_typing: true });
    const first = await reader.waitFor((f) => f.type === "typing");
    expect(first).toEqual({ type: "typing", chat_id: chatId, user_id: buyer, is_typing: true });
    typist.send({ type: "typing", chat_id: chatId, is_typing: true }); // a repeat within 2 s: dropped
    typist.send({ type: "typing", chat_id: chatId, is_typing: false }); // a change of state: relayed
    typist.send({ type: "typing", chat_id: chatId, is_typing: false }); // nothing left to stop: dropped
    stranger.send({ type: "typing", chat_id: chatId, is_typing: true });
    const denied = await stranger.waitFor((f) => f.type === "error");
    expect(denied).toMatchObject({ code: "not_found" });
    await syncPoint(reader, seller, 97);
    expect(reader.ofType("typing").map((f) => f.is_typing)).toEqual([true, false]);
    expect(typist.ofType("typing")).toHaveLength(0);
    await Promise.all([typist.close(), reader.close(), stranger.close()]);
  });

  it("starts a cursor from beyond the stream at the stream's end, so new events are not dropped as seen", async () => {
    const [buyer, seller] = users();
    const chatId = await openChat(buyer, seller);
    const socket = await connect(chat, seller, 10_000);
    const end = socket.ofType("connected")[0]!.last_event_id;
    expect(end).toBeGreaterThan(0);
    expect(end).toBeLessThan(10_000);
    await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "after a renumbering",
      client_msg_id: randomUUID(),
    });
    const got = await socket.waitFor(isMessage("after a renumbering"));
    expect(got.event_id).toBe(end + 1);
    await socket.close();
  });

  it("numbers each user's events on their own: the same message has an id in each participant's stream", async () => {
    const [buyer, seller] = users();
    const other = users()[0];
    const chatId = await openChat(buyer, seller);
    // The seller's stream moves on alone in a chat of theirs without the buyer.
    await openChat(other, seller, 2);
    const [buyerSocket, sellerSocket] = [await connect(chat, buyer, 0), await connect(chat, seller, 0)];
    await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "both streams",
      client_msg_id: randomUUID(),
    });
    const [toBuyer, toSeller] = await Promise.all([
      buyerSocket.waitFor(isMessage("both streams")),
      sellerSocket.waitFor(isMessage("both streams")),
    ]);
    expect(toBuyer.message).toEqual(toSeller.message);
    expect(buyerSocket.eventIds()).toEqual([1, 2]);
    expect(sellerSocket.eventIds()).toEqual([1, 2, 3]);
    expect(toBuyer.event_id).toBe(2);
    expect(toSeller.event_id).toBe(3);
    await Promise.all([buyerSocket.close(), sellerSocket.close()]);
  });

  it("tells contacts when a user comes online and goes offline, and no one else", async () => {
    const [buyer, seller, outsider] = users();
    await openAsContacts(chat, buyer, seller);
    const watcher = await connect(chat, buyer);
    const stranger = await connect(chat, outsider);
    const first = await connect(chat, seller);
    const second = await connect(chat, seller);
    await watcher.waitFor((f) => f.type === "presence" && f.user_id === seller && f.online);
    // The newcomer hears that its contact is already online.
    await first.waitFor((f) => f.type === "presence" && f.user_id === buyer && f.online);
    await first.close();
    await second.close();
    await watcher.waitFor((f) => f.type === "presence" && f.user_id === seller && !f.online);
    expect(
      watcher
        .ofType("presence")
        .filter((p) => p.user_id === seller)
        .map((p) => p.online),
    ).toEqual([true, false]);
    await syncPoint(stranger, outsider, 96);
    expect(stranger.ofType("presence")).toHaveLength(0);
    await Promise.all([watcher.close(), stranger.close()]);
  });

  it("marks read over WebSocket and tells both participants", async () => {
    const [buyer, seller] = users();
    const chatId = await openChat(buyer, seller);
    const sent = await chat.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "read me",
      client_msg_id: randomUUID(),
    });
    const reader = await connect(chat, seller);
    const writer = await connect(chat, buyer);
    reader.send({ type: "mark_read", chat_id: chatId, message_id: sent.body.id });
    for (const s of [reader, writer]) {
      const receipt = await s.waitFor((f) => f.type === "message_read");
      expect(receipt).toMatchObject({ chat_id: chatId, message_id: sent.body.id, read_by: seller });
    }
    const unread = await chat.api(seller, "GET", "/api/v1/chats/unread");
    expect(unread.body.chats[String(chatId)]).toBeUndefined();
    await Promise.all([reader.close(), writer.close()]);
  });

  it("drops a peer that misses two pongs", async () => {
    const [user] = users();
    const silent = new WebSocket(chat.wsUrl, {
      autoPong: false,
      headers: { "x-internal-token": chat.internalToken, "x-user-id": String(user) },
    });
    const closed = new Promise<number>((resolve) => silent.on("close", (code) => resolve(code)));
    silent.on("error", () => {});
    const started = Date.now();
    expect(await closed).toBe(1006);
    // Heartbeat every 150 ms: dropped on the third tick, never before the second.
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    const alive = await connect(chat, user + 1);
    await new Promise((r) => setTimeout(r, 700));
    expect(alive.ws.readyState).toBe(WebSocket.OPEN);
    await alive.close();
  });

  it("refuses upgrades without the internal token or a user, with a plain HTTP answer", async () => {
    const statusOf = (headers: Record<string, string>, path = "/ws/chat") =>
      new Promise<number>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${chat.server.port}${path}`, { headers });
        ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
        ws.on("open", () => reject(new Error("upgrade was accepted")));
        ws.on("error", () => {});
      });
    expect(await statusOf({ "x-user-id": "5" })).toBe(401);
    expect(await statusOf({ "x-user-id": "5", "x-internal-token": "wrong" })).toBe(401);
    expect(await statusOf({ "x-internal-token": chat.internalToken })).toBe(401);
    expect(await statusOf({ "x-internal-token": chat.internalToken, "x-user-id": "-3" })).toBe(401);
    expect(await statusOf({ "x-internal-token": chat.internalToken, "x-user-id": "5" }, "/ws/other")).toBe(404);
    expect(await statusOf({ "x-internal-token": chat.internalToken, "x-user-id": "5" }, "/ws/chat?after=abc")).toBe(
      400,
    );
  });

  it("counts what happened in /internal/chat/ws/stats", async () => {
    const res = await fetch(`${chat.baseUrl}/internal/chat/ws/stats`, {
      headers: { "x-internal-token": chat.internalToken },
    });
    expect(res.status).toBe(200);
    const stats = (await res.json()) as Record<string, any>;
    expect(Object.keys(stats).sort()).toEqual(
      [
        "instance_id",
        "uptime_s",
        "connections",
        "users_online",
        "connections_total",
        "disconnections_total",
        "messages_received_total",
        "messages_sent_total",
        "broadcasts_total",
        "errors_total",
        "rate_limited_total",
        "slow_consumer_disconnects_total",
        "bus",
        "webhooks",
        "erasures",
      ].sort(),
    );
    expect(stats.bus).toEqual({ kind: "memory", connected: true });
    // The deployment's webhook queue (CONTRACT §9), read from the database: none here.
    expect(stats.webhooks).toEqual({ pending: 0, dead: 0, oldest_pending_s: 0 });
    // The deployment's erasures under way (CONTRACT §12): none.
    expect(stats.erasures).toEqual({ pending: 0, oldest_pending_s: 0 });
    expect(stats.connections_total).toBeGreaterThan(10);
    expect(stats.rate_limited_total).toBeGreaterThanOrEqual(2);
    expect(stats.errors_total).toBeGreaterThanOrEqual(6);
    expect(stats.messages_received_total).toBeGreaterThan(0);
    expect(stats.messages_sent_total).toBeGreaterThan(stats.broadcasts_total);
    const bearer = await fetch(`${chat.baseUrl}/internal/chat/ws/stats`, {
      headers: { authorization: `Bearer ${chat.internalToken}` },
    });
    expect(bearer.status).toBe(200);
    const anonymous = await fetch(`${chat.baseUrl}/internal/chat/ws/stats`);
    expect(anonymous.status).toBe(401);
    const metrics = await fetch(`${chat.baseUrl}/metrics`, { headers: { "x-internal-token": chat.internalToken } });
    const text = await metrics.text();
    expect(text).toMatch(/^listings_chat_connections_total \d+$/m);
    expect(text).toMatch(/^listings_chat_send_limit_local_total 0$/m);
    expect(text).toMatch(/^listings_chat_ws_connections \d+$/m);
  });
});
