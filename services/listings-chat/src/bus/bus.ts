/**
 * What instances tell each other, sharded by user: a message about a user goes to the user's shard, and
 * an instance listens only to the shards of the users it has sockets for, so an instance with no sockets
 * does no work per event. One small interface, two implementations: memory.ts and redis.ts.
 */
export interface Bus {
  readonly kind: "memory" | "redis";
  publish(shard: number, message: string): Promise<void>;
  /** Starts listening to `shard`: once it resolves, every message published to it reaches the handler. */
  listen(shard: number): Promise<void>;
  unlisten(shard: number): Promise<void>;
  /** The one handler of the bus, called once per message, in the order the bus delivers a shard's messages. */
  onMessage(handler: (message: string) => void): void;
  isConnected(): boolean;
  close(): Promise<void>;
}

/** How many shards users are spread over: enough to spread a Redis Cluster, few enough to listen to all. */
export const BUS_SHARDS = 64;

export const shardOf = (userId: number): number => userId % BUS_SHARDS;
