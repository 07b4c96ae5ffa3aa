/**
 * Issue 22's floods, each by one signed-in user through a real gateway and chat instance, asserting what the
 * victim receives (CONTRACT §10). Before: 150 chats opened on one victim in 2.6 s (150 `chat_created`), their
 * presence watched by anyone who opened a chat, 100 edits of 4 KB all pushed to them, 200 of 200 alternating
 * typing frames relayed, 40 presence frames from 20 connect/close cycles, 20 `resume`s answered by 20
 * replays, and 2,000 `mark_read`s each stored.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import { type E2EChat, type E2EGateway, type E2ESocket, startE2EChat, startE2EGateway } from "./support/e2e.ts";

/** PostgreSQL in CI (what production runs); PGlite on a machine without it. */
const target = databaseTargets().at(-1)!;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe(`one user's floods through the gateway (${target.name})`, () => {
  let chat: E2EChat;
  let gateway: E2EGateway;
  let drop = async () => {};
  let nextUser = 60_000 + Math.floor(Math.random() * 1_000) * 10;
  const tokens = new Map<number, string>();

  beforeAll(async () => {
    const db = await target.create();
    drop = db.drop;
    const internalToken = randomBytes(24).toString("hex");
    // The contract's limits and presence grace as they are in production.
    chat = await startE2EChat({ database: db.options, internalToken });
    gateway = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken });
  });

  afterAll(async () => {
    await gateway?.stop();
    await chat?.stop();
    await drop();
  });

  const token = (userId: number) => {
    let t = tokens.get(userId);
    if (!t) {
      t = gateway.accessToken(userId);
      tokens.set(userId, t);
    }
    return t;
  };
  const api = (userId: number, method: string, path: string, body?: unknown) =>
    gateway.api(token(userId), method, path, body);
  const send = (userId: number, chatId: number, content: string) =>
    api(userId, "POST", `/api/v1/chats/${chatId}/messages`, { content, client_msg_id: randomUUID() });

  /** A chat in which both have written: they are contacts, who share presence and typing. */
  async function contacts(buyer: number, seller: number, listing: number) {
    const opened = await api(buyer, "POST", "/api/v1/chats", { listing_id: listing, seller_id: seller });
    expect(opened.status).toBe(201);
    const chatId = opened.body.id as number;
    expect((await send(buyer, chatId, "hello")).status).toBe(201);
    expect((await send(seller, chatId, "hi")).status).toBe(201);
    return chatId;
  }

  /** Waits until `socket` has received an event sent after everything before: a sync point, no sleeping. */
  async function syncPoint(socket: E2ESocket, userId: number) {
    const partner = ++nextUser;
    const opened = await api(partner, "POST", "/api/v1/chats", { listing_id: partner, seller_id: userId });
    await socket.waitFor((f) => f.type === "chat_created" && f.chat.id === opened.body.id);
  }

  it("chat opens: 20 an hour per user, so a flood of 150 reaches the victim as 20, and their contacts stay", async () => {
    const [attacker, victim, friend] = [++nextUser, ++nextUser, ++nextUser];
    const realChat = await contacts(friend, victim, 1);
    const victimSocket = await gateway.connectAs(victim);
    const attackerSocket = await gateway.connectAs(attacker);
    const answers = [];
    for (let listing = 1; listing <= 150; listing++) {
      answers.push(await api(attacker, "POST", "/api/v1/chats", { listing_id: 1_000 + listing, seller_id: victim }));
    }
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(20);
    expect(statuses.slice(20).every((s) => s === 429)).toBe(true);
    const refused = answers[20]!;
    expect(refused.body.error.code).toBe("rate_limited");
    expect(Number(refused.headers["retry-after"])).toBeGreaterThan(3_000);
    await syncPoint(victimSocket, victim);
    expect(victimSocket.ofType("chat_created").filter((f) => f.chat.buyer_id === attacker)).toHaveLength(20);
    // Their real contact is still on the first page of their chats.
    const list = await api(victim, "GET", "/api/v1/chats");
    expect(list.body.chats.some((c: { id: number }) => c.id === realChat)).toBe(true);

    // Opening a chat is not enough to watch someone: the victim never wrote to the attacker.
    await victimSocket.close();
    const again = await gateway.connectAs(victim);
    await again.close();
    await syncPoint(attackerSocket, attacker);
    expect(attackerSocket.ofType("presence").filter((p) => p.user_id === victim)).toEqual([]);
    await attackerSocket.close();
  });

  it("edits and deletes: 30 a minute together, so 100 edits of 4 KB reach the victim as 30", async () => {
    const [attacker, victim] = [++nextUser, ++nextUser];
    const chatId = await contacts(attacker, victim, 2);
    const sent = await send(attacker, chatId, "original");
    const victimSocket = await gateway.connectAs(victim);
    const statuses: number[] = [];
    for (let i = 0; i < 100; i++) {
      const content = `${i}`.padEnd(4_000, "x");
      statuses.push((await api(attacker, "PATCH", `/api/v1/messages/${sent.body.id}`, { content })).status);
    }
    expect(statuses.filter((s) => s === 200)).toHaveLength(30);
    expect(statuses.filter((s) => s === 429)).toHaveLength(70);
    // A delete counts with the edits: refused too.
    expect((await api(attacker, "DELETE", `/api/v1/messages/${sent.body.id}`)).status).toBe(429);
    await syncPoint(victimSocket, victim);
    expect(victimSocket.ofType("message_edited")).toHaveLength(30);
    await victimSocket.close();
  });

  it("typing: 200 frames alternating typing and stopped reach the victim as one of each", async () => {
    const [attacker, victim] = [++nextUser, ++nextUser];
    const chatId = await contacts(attacker, victim, 3);
    const victimSocket = await gateway.connectAs(victim);
    const attackerSocket = await gateway.connectAs(attacker);
    const started = Date.now();
    for (let i = 0; i < 200; i++) attackerSocket.send({ type: "typing", chat_id: chatId, is_typing: i % 2 === 0 });
    // A send from the same socket after the burst: its new_message follows every typing frame relayed.
    attackerSocket.send({ type: "send_message", chat_id: chatId, content: "done", client_msg_id: randomUUID() });
    await victimSocket.waitFor((f) => f.type === "new_message" && f.message.content === "done");
    await sleep(200);
    const windows = Math.ceil((Date.now() - started) / 2_000);
    const typing = victimSocket.ofType("typing").filter((t) => t.user_id === attacker);
    // At most one "typing" per 2 s window (and one "stopped" after each).
    expect(typing.filter((t) => t.is_typing).length).toBeLessThanOrEqual(windows);
    expect(typing.filter((t) => !t.is_typing).length).toBeLessThanOrEqual(windows);
    expect(typing.length).toBeGreaterThan(0);
    await Promise.all([victimSocket.close(), attackerSocket.close()]);
  });

  it("presence: 20 connect/close cycles in a row reach the victim as one 'online', then one 'offline'", async () => {
    const [attacker, victim] = [++nextUser, ++nextUser];
    await contacts(attacker, victim, 4);
    const victimSocket = await gateway.connectAs(victim);
    const started = Date.now();
    for (let i = 0; i < 20; i++) {
      const socket = await gateway.connectAs(attacker);
      await socket.close();
    }
    const cyclesMs = Date.now() - started;
    const during = victimSocket.ofType("presence").filter((p) => p.user_id === attacker);
    expect(during.map((p) => p.online)).toEqual(during.length === 0 ? [] : [true]);
    // "Offline" once the grace after the last close is over.
    await victimSocket.waitFor((f) => f.type === "presence" && f.user_id === attacker && !f.online, 10_000);
    expect(
      victimSocket
        .ofType("presence")
        .filter((p) => p.user_id === attacker)
        .map((p) => p.online),
    ).toEqual([true, false]);
    console.log(`presence flapping: 20 cycles in ${cyclesMs} ms`);
    await victimSocket.close();
  });

  it("blocks: 30 blocks and unblocks an hour, a repeated one not counted, so toggling cannot flood", async () => {
    const [attacker, victim] = [++nextUser, ++nextUser];
    // Blocking someone already blocked changes nothing and is not counted.
    for (let i = 0; i < 5; i++) expect((await api(attacker, "POST", `/api/v1/users/${victim}/block`)).status).toBe(204);
    const statuses: number[] = [];
    for (let i = 0; i < 40; i++) {
      statuses.push((await api(attacker, i % 2 ? "POST" : "DELETE", `/api/v1/users/${victim}/block`)).status);
    }
    // The first block counted one; 29 more toggles pass, then 429.
    expect(statuses.filter((s) => s === 204)).toHaveLength(29);
    expect(statuses.slice(29).every((s) => s === 429)).toBe(true);
  });

  it("resume: 20 frames replay the stream once; mark_read: 2,000 frames store about one read a second", async () => {
    const [attacker, victim] = [++nextUser, ++nextUser];
    const chatId = await contacts(attacker, victim, 5);
    const ids: number[] = [];
    for (let i = 0; i < 40; i++) ids.push((await send(victim, chatId, "x".repeat(2_000))).body.id);
    const attackerSocket = await gateway.connectAs(attacker);
    const victimSocket = await gateway.connectAs(victim);
    for (let i = 0; i < 20; i++) attackerSocket.send({ type: "resume", after: 0 });
    await attackerSocket.until(
      () => attackerSocket.ofType("error").length === 19 && attackerSocket.eventIds().length >= 43,
    );
    await sleep(300); // a second replay, had there been one, would be under way by now
    const replayed = attackerSocket.eventIds();
    // The stream once: chat_created, the two greetings, the 40 messages (and nothing twice).
    expect(replayed).toEqual(Array.from({ length: 43 }, (_, i) => i + 1));
    expect(attackerSocket.ofType("error").every((e) => e.code === "rate_limited")).toBe(true);

    const started = Date.now();
    for (let i = 0; i < 2_000; i++) {
      attackerSocket.send({ type: "mark_read", chat_id: chatId, message_id: ids[i % ids.length]! });
    }
    const last = Math.max(...ids);
    await victimSocket.waitFor((f) => f.type === "message_read" && f.message_id === last, 10_000);
    const seconds = (Date.now() - started) / 1_000;
    expect(victimSocket.ofType("message_read").length).toBeLessThanOrEqual(Math.ceil(seconds) + 1);
    await Promise.all([attackerSocket.close(), victimSocket.close()]);
  });
});
