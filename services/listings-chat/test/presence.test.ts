import { createRedisClient } from "@listings-chat/shared/node";
import type { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { createMemoryPresence, createRedisPresence, type Presence } from "../src/presence/presence.ts";
import { redisNamespace, redisTargets } from "./support/redis.ts";

/** What every implementation promises on one instance: a change is reported once, with a newer version. */
function behavesAsPresence(make: () => Promise<Presence>) {
  it("reports a join and a leave as changes, each with a newer version", async () => {
    const presence = await make();
    const joined = await presence.join(41);
    expect(joined).toMatchObject({ changed: true, online: true });
    const left = await presence.leave(41);
    expect(left).toMatchObject({ changed: true, online: false });
    expect(left.version).toBeGreaterThan(joined.version);
    expect(await presence.leave(41)).toEqual({ changed: false, online: false, version: left.version });
    const back = await presence.join(41);
    expect(back.version).toBeGreaterThan(left.version);
    expect(await presence.states([41, 42])).toEqual([
      { online: true, version: back.version },
      { online: false, version: 0 },
    ]);
  });

  it("reads the states of a page's 100 contacts in their order", async () => {
    const presence = await make();
    const contacts = Array.from({ length: 100 }, (_, i) => 1_000 + i);
    const online = new Map<number, number>();
    for (const userId of [1_000, 1_042, 1_099]) online.set(userId, (await presence.join(userId)).version);
    expect(await presence.states(contacts)).toEqual(
      contacts.map((userId) => ({ online: online.has(userId), version: online.get(userId) ?? 0 })),
    );
  });
}

describe("presence in memory", () => {
  behavesAsPresence(async () => createMemoryPresence());
});

describe.each(redisTargets())("presence shared through $name", (target) => {
  const url = target.url;
  const clients: Redis[] = [];
  const namespaces: Array<ReturnType<typeof redisNamespace>> = [];
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit()));
    for (const ns of namespaces) await ns.drop();
  });
  const make = async (): Promise<[Presence, Presence]> => {
    const ns = redisNamespace(url);
    namespaces.push(ns);
    const pair = [createRedisClient(url), createRedisClient(url)];
    clients.push(...pair);
    const [one, two] = pair.map((redis, i) =>
      createRedisPresence({ redis, keyPrefix: ns.keyPrefix, instanceId: `i${i}`, ttlMs: 5_000 }),
    );
    return [one!, two!];
  };
  behavesAsPresence(async () => (await make())[0]);

  it("counts a user online while any instance holds a claim, and reports only the first and last", async () => {
    const [one, two] = await make();
    const joined = await one.join(45);
    expect(joined.changed).toBe(true);
    expect(await two.join(45)).toEqual({ changed: false, online: true, version: joined.version });
    expect(await one.leave(45)).toEqual({ changed: false, online: true, version: joined.version });
    const left = await two.leave(45);
    expect(left).toMatchObject({ changed: true, online: false });
    expect(left.version).toBeGreaterThan(joined.version);
  });

  it("gives exactly one of two concurrent first joins (and last leaves) the change", async () => {
    const [one, two] = await make();
    for (let user = 100; user < 150; user++) {
      const joins = await Promise.all([one.join(user), two.join(user)]);
      expect(joins.filter((r) => r.changed)).toHaveLength(1);
      const leaves = await Promise.all([one.leave(user), two.leave(user)]);
      expect(leaves.filter((r) => r.changed)).toHaveLength(1);
      expect((await one.states([user]))[0]?.online).toBe(false);
    }
  });

  it("counts a crashed instance's user offline once its claim expires", async () => {
    let now = 1_000_000;
    const ns = redisNamespace(url);
    namespaces.push(ns);
    const redis = createRedisClient(url);
    clients.push(redis);
    const presence = createRedisPresence({
      redis,
      keyPrefix: ns.keyPrefix,
      instanceId: "gone",
      ttlMs: 100,
      now: () => now,
    });
    await presence.join(44);
    expect((await presence.states([44]))[0]?.online).toBe(true);
    now += 101;
    expect((await presence.states([44]))[0]?.online).toBe(false);
  });
});
