import type { Bus } from "./bus.ts";

/** One process: delivery on the next microtask, as asynchronous as a real bus and in publish order. */
export function createMemoryBus(): Bus {
  const listening = new Set<number>();
  let handler: ((message: string) => void) | undefined;
  return {
    kind: "memory",
    async publish(shard, message) {
      if (!listening.has(shard)) return;
      queueMicrotask(() => handler?.(message));
    },
    async listen(shard) {
      listening.add(shard);
    },
    async unlisten(shard) {
      listening.delete(shard);
    },
    onMessage(h) {
      handler = h;
    },
    isConnected: () => true,
    async close() {
      listening.clear();
      handler = undefined;
    },
  };
}
