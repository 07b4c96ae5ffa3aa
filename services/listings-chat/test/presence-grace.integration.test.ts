/**
 * CONTRACT §10: "offline" is announced only after a short grace (hub.ts, PRESENCE_LEAVE_GRACE_MS), so that a
 * user who connects and closes in a loop sends their contacts nothing; a real leave is still announced
 * after the grace, and a shutdown announces at once. Real sockets, the real grace.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PRESENCE_LEAVE_GRACE_MS } from "../src/hub/hub.ts";
import { databaseTargets } from "./support/databases.ts";
import { connect, startTestChat, type TestChat, type TestSocket } from "./support/harness.ts";
import { redisNamespace, redisTargets } from "./support/redis.ts";

const redis = redisTargets().find((t) => t.name === "redis");
// Instances share a database only on PostgreSQL (PGlite serves one process).
const postgres = databaseTargets().find((t) => t.name === "postgres");

/** Presence frames `socket` was told about `userId`, with when they came. */
function watch(socket: TestSocket, userId: number) {
  const heard: { online: boolean; at: number }[] = [];
  socket.ws.on("message", (data) => {
    const frame = JSON.parse(String(data));
    if (frame.type === "presence" && frame.user_id === userId)
      heard.push({ online: frame.online, at: performance.now() });
  });
  return heard;
}

/** A chat in which both have written, so that they share presence whatever the rules of who sees it. */
async function contacts(chat: TestChat, a: number, b: number, listing: number) {
  const opened = await chat.api(a, "POST", "/api/v1/chats", { listing_id: listing, seller_id: b });
  for (const user of [a, b]) {
    const sent = await chat.api(user, "POST", `/api/v1/chats/${opened.body.id}/messages`, {
      content: `hello from ${user}`,
      client_msg_id: randomUUID(),
    });
    expect(sent.status).toBe(201);
  }
}

/** `cycles` connects and closes of `userId`, one after another, on `instances` in turn. */
async function flap(instances: TestChat[], userId: number, cycles: number) {
  for (let i = 0; i < cycles; i++) {
    const socket = await connect(instances[i % instances.length]!, userId);
    await socket.close();
  }
}

describe.each(databaseTargets())("presence grace on $name", (target) => {
  let chat: TestChat;
  let drop: () => Promise<void>;

  beforeAll(async () => {
    const db = await target.create();
    drop = db.drop;
    chat = await startTestChat({ database: db.options });
  });

  afterAll(async () => {
    await chat?.stop();
    await drop?.();
  });

  it("tells a contact nothing of 20 connects and closes but the first 'online', then 'offline' after the grace", async () => {
    const [a, b] = [81_001, 81_002];
    await contacts(chat, a, b, 1);
    const watcher = await connect(chat, b);
    const heard = watch(watcher, a);
    const started = performance.now();
    await flap([chat], a, 20);
    const lastClose = performance.now();
    const during = heard.filter((h) => h.at <= lastClose);
    console.info(
      `presence flapping: 20 connect/close cycles in ${(lastClose - started).toFixed(0)} ms, ` +
        `${during.length} frame(s) to the contact meanwhile`,
    );
    expect(during.length).toBeLessThanOrEqual(1);
    if (during[0]) expect(during[0].online).toBe(true);
    await watcher.until(() => heard.at(-1)?.online === false, PRESENCE_LEAVE_GRACE_MS + 5_000);
    const offline = heard.at(-1)!;
    // Not before the grace (counted from the last close, which the server saw before the client did).
    expect(offline.at - lastClose).toBeGreaterThanOrEqual(PRESENCE_LEAVE_GRACE_MS - 100);
    expect(heard.map((h) => h.online)).toEqual([true, false]);
    await watcher.close();
  }, 30_000);

  it("tells a contact 'offline' after the grace when a user with several sockets leaves, and 'online' when back", async () => {
    const [a, b] = [81_011, 81_012];
    await contacts(chat, a, b, 1);
    const watcher = await connect(chat, b);
    const heard = watch(watcher, a);
    const sockets = await Promise.all([connect(chat, a), connect(chat, a)]);
    await watcher.until(() => heard.length === 1);
    await Promise.all(sockets.map((s) => s.close()));
    await watcher.until(() => heard.length === 2, PRESENCE_LEAVE_GRACE_MS + 5_000);
    const back = await connect(chat, a);
    await watcher.until(() => heard.length === 3);
    expect(heard.map((h) => h.online)).toEqual([true, false, true]);
    await Promise.all([back.close(), watcher.close()]);
  }, 30_000);
});

describe.runIf(redis && postgres)("presence grace across instances (Redis, PostgreSQL)", () => {
  let one: TestChat;
  let two: TestChat;
  let shared: Parameters<typeof startTestChat>[0];
  let cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    const db = await postgres!.create();
    const ns = redisNamespace(redis!.url);
    cleanups = [db.drop, ns.drop];
    shared = { database: db.options, redis: { url: redis!.url, keyPrefix: ns.keyPrefix }, internalToken: randomUUID() };
    one = await startTestChat({ ...shared, instanceId: "grace-one" });
    two = await startTestChat({ ...shared, instanceId: "grace-two" });
  });

  afterAll(async () => {
    await one?.stop();
    await two?.stop();
    for (const cleanup of cleanups) await cleanup();
  });

  it("tells a contact nothing of 20 connects and closes spread over two instances but the first 'online'", async () => {
    const [a, b] = [82_001, 82_002];
    await contacts(one, a, b, 1);
    const watcher = await connect(one, b);
    const heard = watch(watcher, a);
    await flap([one, two], a, 20);
    const lastClose = performance.now();
    expect(heard.filter((h) => h.at <= lastClose).length).toBeLessThanOrEqual(1);
    await watcher.until(() => heard.at(-1)?.online === false, PRESENCE_LEAVE_GRACE_MS + 5_000);
    expect(heard.map((h) => h.online)).toEqual([true, false]);
    await watcher.close();
  }, 30_000);

  it("announces 'offline' at once on shutdown, for a user still connected and for one within the grace", async () => {
    const [a, b, c] = [82_011, 82_012, 82_013];
    await contacts(one, a, b, 2);
    await contacts(one, c, b, 3);
    // A grace far longer than the test: only the shutdown can announce in time.
    const leaving = await startTestChat({
      ...shared,
      instanceId: "grace-leaving",
      overrides: { presenceLeaveGraceMs: 60_000 },
    });
    const watcher = await connect(one, b);
    const aboutA = watch(watcher, a);
    const aboutC = watch(watcher, c);
    await connect(leaving, a);
    const gone = await connect(leaving, c);
    await watcher.until(() => aboutA.length === 1 && aboutC.length === 1);
    await gone.close(); // c's leave now waits for the grace
    const stopping = performance.now();
    await leaving.stop();
    await watcher.until(() => aboutA.length === 2 && aboutC.length === 2, 5_000);
    expect(aboutA.map((h) => h.online)).toEqual([true, false]);
    expect(aboutC.map((h) => h.online)).toEqual([true, false]);
    expect(Math.max(aboutA[1]!.at, aboutC[1]!.at) - stopping).toBeLessThan(5_000);
    await watcher.close();
  }, 30_000);
});
