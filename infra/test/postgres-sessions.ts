/**
 * How many PostgreSQL sessions the deployment files let the chat service open: the arithmetic behind the
 * max_connections they declare (README, "Connections: pool sizes, PgBouncer and max_connections"), shared by
 * infra/test/k8s.test.ts and infra/test/compose.test.ts.
 */
import type { ChatConfig } from "../../services/listings-chat/src/env.ts";

/**
 * One chat instance at most, from its own configuration (its defaults included): the write pool, the page
 * reads' pool, and one migration session (the init container's, or the instance's own at start; it is closed
 * before the pools open, so counting it is an upper bound).
 */
export function sessionsPerChatInstance(config: ChatConfig): { pools: number; migration: number } {
  if (!("url" in config.database)) throw new Error("no DATABASE_URL: PGlite opens no PostgreSQL session");
  const { poolSize, readPool } = config.database;
  if (poolSize === undefined || readPool?.size === undefined) {
    throw new Error("loadChatConfig gave no pool sizes: the arithmetic needs both");
  }
  return { pools: poolSize + readPool.size, migration: 1 };
}

/** The value of `-c name=value` in a PostgreSQL command line (compose's `command`), or undefined. */
export function postgresSetting(command: readonly string[], name: string): number | undefined {
  for (const [i, arg] of command.entries()) {
    const setting = arg === "-c" ? command[i + 1] : arg.startsWith("-c") ? arg.slice(2) : undefined;
    const match = setting === undefined ? null : new RegExp(`^${name}=(\\d+)$`).exec(setting);
    if (match) return Number(match[1]);
  }
  return undefined;
}
