import { Cluster, Redis, type RedisOptions } from "ioredis";
import { redisUrls } from "./config.ts";

/**
 * Options of every ioredis client that sends commands: a command is retried twice across reconnects, and
 * none waits more than 2 s for its answer (a paused or partitioned Redis costs callers 2 s, not forever).
 */
export const redisCommandOptions = { maxRetriesPerRequest: 2, commandTimeout: 2_000 } as const;

export interface RedisClientOptions {
  lazyConnect?: boolean;
  /** A connection that only listens (sharded pub/sub): no command timeout, and on a cluster one per node. */
  subscriber?: boolean;
}

/**
 * A Redis client for `REDIS_URL`: a plain client for one URL, a Redis Cluster client for several. Typed as
 * `Redis` because every command the services use exists on both with the same signature; commands are
 * auto-pipelined, so many single-key commands issued together travel in one round trip per node, and
 * keys of different hash slots never meet in one pipeline (which a cluster refuses).
 */
export function createRedisClient(url: string, options: RedisClientOptions = {}): Redis {
  const urls = redisUrls(url);
  const commandOptions: RedisOptions = options.subscriber ? {} : { ...redisCommandOptions };
  const base: RedisOptions = { ...commandOptions, lazyConnect: options.lazyConnect ?? false };
  if (urls.length === 1) return new Redis(urls[0]!, { ...base, enableAutoPipelining: true });
  const first = new URL(urls[0]!);
  const cluster = new Cluster(
    urls.map((entry) => {
      const parsed = new URL(entry);
      return { host: parsed.hostname, port: Number(parsed.port || 6379) };
    }),
    {
      lazyConnect: options.lazyConnect ?? false,
      enableAutoPipelining: true,
      shardedSubscribers: options.subscriber ?? false,
      redisOptions: {
        ...commandOptions,
        username: first.username ? decodeURIComponent(first.username) : undefined,
        password: first.password ? decodeURIComponent(first.password) : undefined,
        tls: first.protocol === "rediss:" ? {} : undefined,
      },
    },
  );
  return cluster as unknown as Redis;
}
