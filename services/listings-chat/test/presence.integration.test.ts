import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseTargets } from "./support/databases.ts";
import { connect, openAsContacts, startTestChat, type TestChat, type TestSocket } from "./support/harness.ts";
import { redisNamespace, redisTargets } from "./support/redis.ts";

const redisSingle = redisTargets().find((t) => t.name === "redis");
const redisCluster = redisTargets().find((t) => t.name === "redis cluster");

/**
 * Every database, with in-process presence and with Redis presence. With Redis on PostgreSQL two instances
 * share the work, so announcements cross the bus from another process's connection (PGlite serves one).
 */
const setups = databaseTargets().flatMap((target) => [
  { name: `${target.name}, in-process presence`, target, redis: undefined, instances: 1 },
  ...(redisSingle
    ? [
        {
          name: `${target.name}, Redis presence`,
          target,
          redis: redisSingle.url,
          instances: target.name === "postgres" ? 2 : 1,
        },
      ]
    : []),
  ...(redisCluster && target.name === "postgres"
    ? [{ name: `${target.name}, Redis Cluster presence`, target, redis: redisCluster.url, instances: 2 }]
    : []),
]);

/** The `online` values a socket was told about `userId`, in order. */
const toldAbout = (socket: TestSocket, userId: number) =>
  socket
    .ofType("presence")
    .filter((p) => p.user_id === userId)
    .map((p) => p.online);

/** One frame per change: the told states alternate, starting with "online" (a contact is offline until told). */
function expectChanges(told: boolean[]) {
  for (const [i, online] of told.entries()) expect(online, `frame ${i} of ${JSON.stringify(told)}`).toBe(i % 2 === 0);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.each(setups)("presence under concurrent connects and disconnects ($name)", (setup) => {
  let instances: TestChat[] = [];
  let cleanups: Array<() => Promise<void>> = [];
  let nextUser = 30_000;

  beforeAll(async () => {
    const db = await setup.target.create();
    cleanups.push(db.drop);
    const ns = setup.redis ? redisNamespace(setup.redis) : undefined;
    if (ns) cleanups.push(ns.drop);
    const shared = {
      database: db.options,
      internalToken: randomUUID(),
      // A short grace before "offline" (hub.ts): the sockets that drop and come back within it stay online.
      overrides: { presenceLeaveGraceMs: 200 },
      ...(ns && setup.redis ? { redis: { url: setup.redis, keyPrefix: ns.keyPrefix } } : {}),
    };
    for (let i = 0; i < setup.instances; i++) instances.push(await startTestChat({ ...shared, instanceId: `p${i}` }));
  });

  afterAll(async () => {
    for (const instance of instances) await instance.stop();
    for (const cleanup of cleanups) await cleanup();
    instances = [];
    cleanups = [];
  });

  const on = (i: number) => instances[i % instances.length]!;

  it("tells each socket of every change exactly once, and leaves every page with the right final state", async () => {
    const rounds = 12;
    for (let round = 0; round < rounds; round++) {
      nextUser += 2;
      const [buyer, seller] = [nextUser, nextUser + 1];
      await openAsContacts(on(0), buyer, seller, 1);
      // Both participants connect at once, a few sockets each, spread over the instances.
      const [buyers, sellers] = await Promise.all([
        Promise.all([0, 1].map((i) => connect(on(round + i), buyer))),
        Promise.all([0, 1, 2].map((i) => connect(on(round + i + 1), seller))),
      ]);
      // Each of them must learn the other is online: once.
      for (const socket of buyers) await socket.until(() => toldAbout(socket, seller).includes(true));
      for (const socket of sellers) await socket.until(() => toldAbout(socket, buyer).includes(true));
      // The seller leaves (all sockets at once) while the buyer's sockets drop and come back.
      const back = await Promise.all([
        ...sellers.map((s) => s.close().then(() => undefined)),
        buyers[0]!.close().then(() => connect(on(round), buyer)),
      ]);
      const stayed = buyers[1]!;
      const rejoined = back.at(-1)!;
      await stayed.until(() => toldAbout(stayed, seller).at(-1) === false);
      // Nothing more arrives once it has settled.
      await sleep(150);
      for (const socket of buyers) expectChanges(toldAbout(socket, seller));
      for (const socket of sellers) expectChanges(toldAbout(socket, buyer));
      expect(toldAbout(stayed, seller)).toEqual([true, false]);
      // The socket that came back may have seen the seller online or not, but it ends offline.
      const rejoinedTold = toldAbout(rejoined, seller);
      expectChanges(rejoinedTold);
      expect(rejoinedTold.length % 2).toBe(0);
      await Promise.all([stayed.close(), rejoined.close()]);
    }
  });

  it("never shows a contact who has left as online, when both flap at once", async () => {
    nextUser += 2;
    const [a, b] = [nextUser, nextUser + 1];
    await openAsContacts(on(0), a, b, 2);
    const watcher = await connect(on(1), a);
    for (let round = 0; round < 15; round++) {
      // b comes and goes while a opens another socket that takes its snapshot in the middle of it.
      const [bSocket, aSocket] = await Promise.all([connect(on(round), b), connect(on(round + 1), a)]);
      await Promise.all([bSocket.close(), sleep(round % 4).then(() => aSocket.close())]);
      expectChanges(toldAbout(aSocket, b));
    }
    await watcher.until(() => toldAbout(watcher, b).length > 0 && toldAbout(watcher, b).at(-1) === false);
    await sleep(150);
    const told = toldAbout(watcher, b);
    expectChanges(told);
    expect(told.at(-1)).toBe(false);
    await watcher.close();
  });
});

/**
 * What goes on the bus when a seller with several contacts connects: one presence message per bus shard,
 * addressed to the contacts in that shard who are online, and nothing for those who are not.
 */
describe.runIf(redisSingle)("presence announcements on the bus (Redis)", () => {
  let chat: TestChat;
  let cleanups: Array<() => Promise<void>> = [];
  let listener: import("ioredis").Redis;
  let keyPrefix: string;

  beforeAll(async () => {
    const db = await databaseTargets()[0]!.create();
    const ns = redisNamespace(redisSingle!.url);
    keyPrefix = ns.keyPrefix;
    cleanups = [db.drop, ns.drop];
    chat = await startTestChat({ database: db.options, redis: { url: redisSingle!.url, keyPrefix } });
    const { Redis } = await import("ioredis");
    listener = new Redis(redisSingle!.url);
  });

  afterAll(async () => {
    listener?.disconnect();
    await chat?.stop();
    for (const cleanup of cleanups) await cleanup();
  });

  it("publishes once per shard, to the online contacts only", async () => {
    // Three buyers in bus shard 5 (of 64), one in shard 9; the seller in shard 2.
    const [a, b, c] = [64 * 700 + 5, 64 * 701 + 5, 64 * 702 + 5];
    const d = 64 * 703 + 9;
    const seller = 64 * 704 + 2;
    for (const buyer of [a, b, c, d]) {
      await openAsContacts(chat, buyer, seller, buyer);
    }
    const online = await Promise.all([a, c, d].map((user) => connect(chat, user)));
    const heard: Array<{ channel: string; message: { kind: string; userIds: number[]; frame: { user_id: number } } }> =
      [];
    listener.on("smessage", (channel: string, raw: string) => heard.push({ channel, message: JSON.parse(raw) }));
    await listener.ssubscribe(`${keyPrefix}bus:{5}`, `${keyPrefix}bus:{9}`);

    const sellerSocket = await connect(chat, seller);
    for (const socket of online) await socket.waitFor((f) => f.type === "presence" && f.user_id === seller);
    await sleep(200);
    const aboutSeller = heard.filter((h) => h.message.kind === "frame" && h.message.frame.user_id === seller);
    expect(
      aboutSeller
        .map((h) => [h.channel.slice(keyPrefix.length), [...h.message.userIds].sort((x, y) => x - y)])
        .sort(([x], [y]) => String(x).localeCompare(String(y))),
    ).toEqual([
      ["bus:{5}", [a, c]],
      ["bus:{9}", [d]],
    ]);
    // The one who was offline reads the seller's state when they come.
    const late = await connect(chat, b);
    await late.waitFor((f) => f.type === "presence" && f.user_id === seller && f.online);
    for (const socket of [...online, sellerSocket, late]) await socket.close();
  });
});
