import { randomUUID } from "node:crypto";
import type { ServerFrame } from "@listings-chat/shared";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUS_SHARDS, shardOf } from "../src/bus/bus.ts";
import { createRateLimiter } from "../src/limits/rate-limiter.ts";
import { createMessageService } from "../src/messages/service.ts";
import { databaseTargets } from "./support/databases.ts";
import { connect, openAsContacts, startTestChat, type TestChat } from "./support/harness.ts";
import { redisNamespace, redisTargets } from "./support/redis.ts";

type NewMessage = Extract<ServerFrame, { type: "new_message" }>;

const postgres = databaseTargets().find((t) => t.name === "postgres");

/** Two chat instances on one PostgreSQL, cooperating through one Redis (or a Redis Cluster), as in production. */
describe.runIf(postgres).each(redisTargets())("fan-out across instances through $name", (target) => {
  const redis = target.url;
  let one: TestChat;
  let two: TestChat;
  let cleanups: Array<() => Promise<void>> = [];
  let shared: Parameters<typeof startTestChat>[0];
  let chatId: number;
  const buyer = 7001;
  const seller = 7002;

  beforeAll(async () => {
    const db = await postgres!.create();
    const ns = redisNamespace(redis);
    cleanups = [db.drop, ns.drop];
    shared = {
      database: db.options,
      redis: { url: redis, keyPrefix: ns.keyPrefix },
      internalToken: randomUUID(),
      // "Offline" after a short grace (hub.ts): the shutdown below must still announce it at once.
      overrides: { presenceLeaveGraceMs: 200 },
    };
    one = await startTestChat({ ...shared, instanceId: "one" });
    two = await startTestChat({ ...shared, instanceId: "two" });
    chatId = (await one.api(buyer, "POST", "/api/v1/chats", { listing_id: 5, seller_id: seller })).body.id;
  });

  afterAll(async () => {
    await one?.stop();
    await two?.stop();
    for (const cleanup of cleanups) await cleanup();
  });

  it("reports the redis bus as connected", async () => {
    for (const instance of [one, two]) {
      const stats = (await (
        await fetch(`${instance.baseUrl}/internal/chat/ws/stats`, {
          headers: { "x-internal-token": instance.internalToken },
        })
      ).json()) as { bus: unknown };
      expect(stats.bus).toEqual({ kind: "redis", connected: true });
    }
  });

  it("delivers what one instance stores to sockets on the other, in the same order everywhere", async () => {
    const buyerOnOne = await connect(one, buyer);
    const sellerOnTwo = await connect(two, seller);
    const start = buyerOnOne.ofType("connected")[0]!.last_event_id;
    // Both instances store at once, over REST and WebSocket.
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < 20; i++) {
      sends.push(
        one.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
          content: `one ${i}`,
          client_msg_id: randomUUID(),
        }),
      );
      sellerOnTwo.send({ type: "send_message", chat_id: chatId, content: `two ${i}`, client_msg_id: randomUUID() });
    }
    await Promise.all(sends);
    await sellerOnTwo.until(() => sellerOnTwo.ofType("ack").length === 20);
    const log = (await one.api(seller, "GET", `/api/v1/events?after=${start}`)).body.events.map(
      (e: { event_id: number }) => e.event_id,
    );
    expect(log).toHaveLength(40);
    for (const socket of [buyerOnOne, sellerOnTwo]) {
      await socket.until(() => socket.eventIds().length >= 40);
      expect(socket.eventIds()).toEqual(log);
    }
    await Promise.all([buyerOnOne.close(), sellerOnTwo.close()]);
  });

  it("fills from the log an event whose publisher died after its commit", async () => {
    const watcher = await connect(two, seller);
    // A writer that commits but never publishes, like an instance killed between the two.
    const silent = createMessageService({
      db: one.server.database.db,
      publish: () => {},
      limits: createRateLimiter(),
    });
    const lost = await silent.send(buyer, chatId, "never published", randomUUID());
    await one.api(buyer, "POST", `/api/v1/chats/${chatId}/messages`, {
      content: "published",
      client_msg_id: randomUUID(),
    });
    const recovered = await watcher.waitFor(
      (f): f is NewMessage => f.type === "new_message" && f.message.id === lost.message.id,
      5_000,
    );
    const next = await watcher.waitFor(
      (f): f is NewMessage => f.type === "new_message" && f.message.content === "published",
      5_000,
    );
    expect(recovered.event_id + 1).toBe(next.event_id);
    expect(watcher.eventIds()).toEqual([recovered.event_id, next.event_id]);
    await watcher.close();
  });

  it("delivers an event whose publish was lost at the tail of the log, with no later event to reveal it", async () => {
    const watcher = await connect(two, seller);
    const silent = createMessageService({
      db: one.server.database.db,
      publish: () => {},
      limits: createRateLimiter(),
    });
    const lost = await silent.send(buyer, chatId, "last word, never published", randomUUID());
    // The tail check runs every 2 s and reads what it saw one check earlier: at most about 4 s.
    const recovered = await watcher.waitFor(
      (f): f is NewMessage => f.type === "new_message" && f.message.id === lost.message.id,
      6_000,
    );
    expect(recovered.message.content).toBe("last word, never published");
    expect(watcher.eventIds()).toEqual([recovered.event_id]);
    await watcher.close();
  });

  it("shares the send limit and presence between instances", async () => {
    const [a, b] = [7101, 7102];
    // Contacts (both wrote), so that presence passes: a's "hello" is the first of its 60 sends.
    const id = await openAsContacts(one, a, b, 6);
    const watcher = await connect(one, b);
    const onTwo = await connect(two, a);
    await watcher.waitFor((f) => f.type === "presence" && f.user_id === a && f.online);
    for (let i = 0; i < 59; i++) {
      const instance = i % 2 ? one : two;
      const res = await instance.api(a, "POST", `/api/v1/chats/${id}/messages`, {
        content: `m${i}`,
        client_msg_id: randomUUID(),
      });
      expect(res.status).toBe(201);
    }
    expect(
      (await one.api(a, "POST", `/api/v1/chats/${id}/messages`, { content: "too many", client_msg_id: randomUUID() }))
        .status,
    ).toBe(429);
    expect(
      (await two.api(a, "POST", `/api/v1/chats/${id}/messages`, { content: "too many", client_msg_id: randomUUID() }))
        .status,
    ).toBe(429);
    await onTwo.close();
    await watcher.waitFor((f) => f.type === "presence" && f.user_id === a && !f.online);
    await watcher.close();
  });

  it("tells contacts 'offline' for the users of an instance that shuts down", async () => {
    const [a, b] = [7201, 7202];
    await openAsContacts(one, a, b, 7);
    const three = await startTestChat({ ...shared, instanceId: "three" });
    const watcher = await connect(one, b);
    await connect(three, a);
    await watcher.waitFor((f) => f.type === "presence" && f.user_id === a && f.online);
    await three.stop();
    // Announced before the instance closed its bus and database, not left for the claim to expire.
    await watcher.waitFor((f) => f.type === "presence" && f.user_id === a && !f.online, 3_000);
    await watcher.close();
  });

  // PUBSUB SHARDNUMSUB answers for the node it is sent to: counted on the single server only.
  it.runIf(target.name === "redis")(
    "listens only to the shards of the users it serves: an instance with no sockets hears nothing",
    async () => {
      const idle = await startTestChat({ ...shared, instanceId: "idle" });
      const client = new Redis(redis);
      const channels = Array.from({ length: BUS_SHARDS }, (_, shard) => `${shared.redis?.keyPrefix}bus:{${shard}}`);
      const listeners = async () => {
        const reply = (await client.call("PUBSUB", "SHARDNUMSUB", ...channels)) as Array<string | number>;
        return channels.map((_, i) => Number(reply[2 * i + 1]));
      };
      try {
        const [a, b] = [7301, 7302];
        const id = (await one.api(a, "POST", "/api/v1/chats", { listing_id: 8, seller_id: b })).body.id;
        const sockets = [await connect(one, a), await connect(one, b)];
        const counts = await listeners();
        for (const [shard, n] of counts.entries()) {
          expect(n, `listeners of shard ${shard}`).toBe(shard === shardOf(a) || shard === shardOf(b) ? 1 : 0);
        }
        for (let i = 0; i < 10; i++) {
          await two.api(a, "POST", `/api/v1/chats/${id}/messages`, { content: `to ${i}`, client_msg_id: randomUUID() });
        }
        await sockets[1]!.waitFor((f) => f.type === "new_message" && f.message.content === "to 9");
        const idleStats = (await (
          await fetch(`${idle.baseUrl}/internal/chat/ws/stats`, { headers: { "x-internal-token": idle.internalToken } })
        ).json()) as { broadcasts_total: number };
        expect(idleStats.broadcasts_total).toBe(0);
        for (const socket of sockets) await socket.close();
        // The last user of a shard gone, the instance stops listening to it.
        const deadline = Date.now() + 3_000;
        while ((await listeners()).some((n) => n > 0) && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 50));
        expect((await listeners()).every((n) => n === 0)).toBe(true);
      } finally {
        client.disconnect();
        await idle.stop();
      }
    },
  );
});
