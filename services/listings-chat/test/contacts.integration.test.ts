/**
 * CONTRACT §10: presence and typing pass only between two people who have both written in a chat they share,
 * from the moment that is true (no reconnect), and never while either blocks the other. Over real sockets,
 * on every database, in one instance and (with Redis, on PostgreSQL) across two, where the change of
 * contacts crosses the bus.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat, type TestSocket } from "./support/harness.ts";
import { redisNamespace, redisTargets } from "./support/redis.ts";

const redis = redisTargets().find((t) => t.name === "redis");

const setups = databaseTargets().flatMap((target) => [
  { name: `${target.name}, one instance`, target, redis: undefined, instances: 1 },
  ...(redis && target.name === "postgres"
    ? [{ name: `${target.name}, two instances over Redis`, target, redis: redis.url, instances: 2 }]
    : []),
]);

/** What a socket was told of `userId`'s presence, in order. */
const presenceOf = (socket: TestSocket, userId: number) =>
  socket
    .ofType("presence")
    .filter((p) => p.user_id === userId)
    .map((p) => p.online);
const typingFrom = (socket: TestSocket, userId: number) => socket.ofType("typing").filter((t) => t.user_id === userId);

/** Long enough for a frame that was going to come to have come (for asserting that one did not). */
const QUIET_MS = 400;
const quiet = () => new Promise((resolve) => setTimeout(resolve, QUIET_MS));

describe.each(setups)("presence and typing between contacts only ($name)", (setup) => {
  const instances: TestChat[] = [];
  const cleanups: Array<() => Promise<void>> = [];
  let nextUser = 70_000;

  beforeAll(async () => {
    const db = await setup.target.create();
    cleanups.push(db.drop);
    const ns = setup.redis ? redisNamespace(setup.redis) : undefined;
    if (ns) cleanups.push(ns.drop);
    const shared = {
      database: db.options,
      internalToken: randomUUID(),
      overrides: { presenceLeaveGraceMs: 0 },
      ...(ns && setup.redis ? { redis: { url: setup.redis, keyPrefix: ns.keyPrefix } } : {}),
    };
    for (let i = 0; i < setup.instances; i++) instances.push(await startTestChat(shared));
  });

  afterAll(async () => {
    for (const instance of instances) await instance.stop();
    for (const cleanup of cleanups) await cleanup();
  });

  /** A buyer and a seller, each with a live socket (on different instances when there are two). */
  async function pair() {
    const buyer = ++nextUser;
    const seller = ++nextUser;
    const one = instances[0]!;
    const two = instances[instances.length - 1]!;
    const buyerSocket = await connect(one, buyer);
    const sellerSocket = await connect(two, seller);
    const opened = await one.api(buyer, "POST", "/api/v1/chats", { listing_id: nextUser, seller_id: seller });
    expect(opened.status).toBe(201);
    const chatId = opened.body.id as number;
    const send = (from: number, content: string) =>
      one.api(from, "POST", `/api/v1/chats/${chatId}/messages`, { content, client_msg_id: randomUUID() });
    return { buyer, seller, buyerSocket, sellerSocket, chatId, send, one, two };
  }

  it("shares nothing until both have written, then presence and typing at once, without a reconnect", async () => {
    const { buyer, seller, buyerSocket, sellerSocket, chatId, send } = await pair();
    // Only the buyer has written: a stranger who opened a chat learns nothing of the seller, nor the reverse.
    expect((await send(buyer, "is it still available?")).status).toBe(201);
    await sellerSocket.waitFor((f) => f.type === "new_message");
    buyerSocket.send({ type: "typing", chat_id: chatId, is_typing: true });
    await quiet();
    expect(presenceOf(buyerSocket, seller)).toEqual([]);
    expect(presenceOf(sellerSocket, buyer)).toEqual([]);
    expect(typingFrom(sellerSocket, buyer)).toEqual([]);

    // The seller answers: from this moment each sees the other online.
    expect((await send(seller, "yes it is")).status).toBe(201);
    await buyerSocket.waitFor((f) => f.type === "presence" && f.user_id === seller && f.online);
    await sellerSocket.waitFor((f) => f.type === "presence" && f.user_id === buyer && f.online);
    // Typing passes now, once the typing gate's 2 s since the first "typing" (which it let through, and the
    // contact check stopped) are over.
    await new Promise((resolve) => setTimeout(resolve, 2_100));
    buyerSocket.send({ type: "typing", chat_id: chatId, is_typing: true });
    await sellerSocket.waitFor((f) => f.type === "typing" && f.user_id === buyer && f.is_typing);
    // And changes go on being announced: the seller leaves, the buyer hears it.
    await sellerSocket.close();
    await buyerSocket.waitFor((f) => f.type === "presence" && f.user_id === seller && !f.online);
    expect(presenceOf(buyerSocket, seller)).toEqual([true, false]);
    await buyerSocket.close();
  });

  it("hides presence and typing both ways while either blocks the other, and shows them again after", async () => {
    const { buyer, seller, buyerSocket, sellerSocket, chatId, send, one } = await pair();
    expect((await send(buyer, "hello")).status).toBe(201);
    expect((await send(seller, "hi")).status).toBe(201);
    await buyerSocket.waitFor((f) => f.type === "presence" && f.user_id === seller && f.online);
    await sellerSocket.waitFor((f) => f.type === "presence" && f.user_id === buyer && f.online);

    expect((await one.api(seller, "POST", `/api/v1/users/${buyer}/block`)).status).toBe(204);
    // Both are told the other is offline, though both are still connected.
    await buyerSocket.waitFor((f) => f.type === "presence" && f.user_id === seller && !f.online);
    await sellerSocket.waitFor((f) => f.type === "presence" && f.user_id === buyer && !f.online);
    const typedBefore = typingFrom(sellerSocket, buyer).length;
    buyerSocket.send({ type: "typing", chat_id: chatId, is_typing: false });
    await new Promise((resolve) => setTimeout(resolve, 2_100)); // past the typing gate's 2 s
    buyerSocket.send({ type: "typing", chat_id: chatId, is_typing: true });
    await quiet();
    expect(typingFrom(sellerSocket, buyer)).toHaveLength(typedBefore);

    // A socket that connects while the block stands is not told either.
    const late = await connect(one, buyer);
    await quiet();
    expect(presenceOf(late, seller)).toEqual([]);

    expect((await one.api(seller, "DELETE", `/api/v1/users/${buyer}/block`)).status).toBe(204);
    await buyerSocket.until(() => presenceOf(buyerSocket, seller).length === 3, 5_000);
    await late.waitFor((f) => f.type === "presence" && f.user_id === seller && f.online);
    expect(presenceOf(buyerSocket, seller)).toEqual([true, false, true]);
    expect(presenceOf(late, seller)).toEqual([true]);
    await Promise.all([buyerSocket.close(), sellerSocket.close(), late.close()]);
  });
});
