import { randomBytes } from "node:crypto";
import { createRedisClient } from "@listings-chat/shared/node";
import type { Cluster, Redis } from "ioredis";

/** REDIS_URL when set; in CI it must be, so that fan-out tests never pass by being skipped. */
export function redisUrl(): string | undefined {
  const url = process.env.REDIS_URL;
  if (!url && process.env.CI) throw new Error("CI must set REDIS_URL: fan-out is tested against a real Redis");
  return url;
}

/** A Redis the multi-instance suites run on: the single server, and a Redis Cluster when one is given. */
export interface RedisTarget {
  name: "redis" | "redis cluster";
  url: string;
}

/**
 * The single Redis of REDIS_URL, and the cluster of REDIS_CLUSTER_URL (its seed nodes, comma-separated).
 * In CI both must be set: `.ci/run` starts a three-master cluster for this.
 */
export function redisTargets(): RedisTarget[] {
  const single = redisUrl();
  const cluster = process.env.REDIS_CLUSTER_URL;
  if (!cluster && process.env.CI) {
    throw new Error("CI must set REDIS_CLUSTER_URL: the multi-instance suites run on a Redis Cluster too");
  }
  return [
    ...(single ? [{ name: "redis" as const, url: single }] : []),
    ...(cluster ? [{ name: "redis cluster" as const, url: cluster }] : []),
  ];
}

/** A key prefix of this run's own, and a function that deletes every key under it (on every master of a cluster). */
export function redisNamespace(url: string) {
  const keyPrefix = `lc-test:${process.pid}:${randomBytes(4).toString("hex")}:`;
  return {
    keyPrefix,
    async drop() {
      const client = createRedisClient(url);
      try {
        if (client.status !== "ready") await new Promise((resolve) => client.once("ready", resolve));
        const nodes: Redis[] = "nodes" in client ? (client as unknown as Cluster).nodes("master") : [client];
        for (const node of nodes) {
          let cursor = "0";
          do {
            const [next, keys] = await node.scan(cursor, "MATCH", `${keyPrefix}*`, "COUNT", 500);
            // One key at a time: on a cluster a DEL of several keys must not span hash slots.
            await Promise.all(keys.map((key) => client.del(key)));
            cursor = next;
          } while (cursor !== "0");
        }
      } finally {
        client.disconnect();
      }
    },
  };
}
