import type { Bus, BusChannel } from "./bus.ts";

/** One process: delivery on the next microtask, as asynchronous as a real bus and in publish order. */
export function createMemoryBus(): Bus {
  const handlers = new Map<BusChannel, Array<(message: string) => void>>();
  return {
    kind: "memory",
    async publish(channel, message) {
      const list = handlers.get(channel) ?? [];
      queueMicrotask(() => {
        for (const handler of list) handler(message);
      });
    },
    async subscribe(channel, handler) {
      handlers.set(channel, [...(handlers.get(channel) ?? []), handler]);
    },
    isConnected: () => true,
    async close() {
      handlers.clear();
    },
  };
}
