import { createRedisClient } from "@listings-chat/shared/node";
import type { Logger } from "pino";
import type { Bus } from "./bus.ts";

export interface RedisBusOptions {
  url: string;
  /** Namespaces channels, so that test runs and deployments sharing a server never hear each other. */
  keyPrefix: string;
  log: Logger;
}

/**
 * Redis sharded pub/sub between instances (SPUBLISH/SSUBSCRIBE, so it also runs on a Redis Cluster): one
 * connection publishes, a second one listens to the shards this instance needs.
 */
export async function createRedisBus({ url, keyPrefix, log }: RedisBusOptions): Promise<Bus> {
  const publisher = createRedisClient(url, { lazyConnect: true });
  const subscriber = createRedisClient(url, { lazyConnect: true, subscriber: true });
  for (const [name, client] of [
    ["publisher", publisher],
    ["subscriber", subscriber],
  ] as const) {
    client.on("error", (error) => log.warn({ err: error, client: name }, "redis bus connection error"));
  }
  await Promise.all([publisher.connect(), subscriber.connect()]);

  let handler: ((message: string) => void) | undefined;
  subscriber.on("smessage", (_channel: string, message: string) => handler?.(message));
  // The shard in braces is the hash tag: on a Redis Cluster each shard's channel lives on one node.
  const channelName = (shard: number) => `${keyPrefix}bus:{${shard}}`;

  return {
    kind: "redis",
    async publish(shard, message) {
      await publisher.spublish(channelName(shard), message);
    },
    async listen(shard) {
      await subscriber.ssubscribe(channelName(shard));
    },
    async unlisten(shard) {
      await subscriber.sunsubscribe(channelName(shard));
    },
    onMessage(h) {
      handler = h;
    },
    isConnected: () => publisher.status === "ready" && subscriber.status === "ready",
    async close() {
      handler = undefined;
      await Promise.allSettled([publisher.quit(), subscriber.quit()]);
    },
  };
}
