import { Redis } from "ioredis";
import type { Logger } from "pino";
import type { Bus, BusChannel } from "./bus.ts";

export interface RedisBusOptions {
  url: string;
  /** Namespaces channels, so that test runs and deployments sharing a server never hear each other. */
  keyPrefix: string;
  log: Logger;
}

/** Redis pub/sub between instances: one connection publishes, a second one listens. */
export async function createRedisBus({ url, keyPrefix, log }: RedisBusOptions): Promise<Bus> {
  const publisher = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 2 });
  const subscriber = new Redis(url, { lazyConnect: true });
  for (const [name, client] of [
    ["publisher", publisher],
    ["subscriber", subscriber],
  ] as const) {
    client.on("error", (error) => log.warn({ err: error, client: name }, "redis bus connection error"));
  }
  await Promise.all([publisher.connect(), subscriber.connect()]);

  const handlers = new Map<string, Array<(message: string) => void>>();
  subscriber.on("message", (channel: string, message: string) => {
    for (const handler of handlers.get(channel) ?? []) handler(message);
  });
  const channelName = (channel: BusChannel) => `${keyPrefix}bus:${channel}`;

  return {
    kind: "redis",
    async publish(channel, message) {
      await publisher.publish(channelName(channel), message);
    },
    async subscribe(channel, handler) {
      const name = channelName(channel);
      if (!handlers.has(name)) await subscriber.subscribe(name);
      handlers.set(name, [...(handlers.get(name) ?? []), handler]);
    },
    isConnected: () => publisher.status === "ready" && subscriber.status === "ready",
    async close() {
      handlers.clear();
      await Promise.allSettled([publisher.quit(), subscriber.quit()]);
    },
  };
}
