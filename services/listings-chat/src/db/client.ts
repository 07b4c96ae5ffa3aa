import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { sql } from "drizzle-orm";
import { drizzle as drizzleNodePg } from "drizzle-orm/node-postgres";
import { migrate as migrateNodePg } from "drizzle-orm/node-postgres/migrator";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import pg from "pg";
import { type QueryObserver, timeQueries } from "./query-timing.ts";
import * as schema from "./schema.ts";

export type Schema = typeof schema;
/** The database as every repository sees it: the same type on PGlite and on PostgreSQL. */
export type Database = PgDatabase<PgQueryResultHKT, Schema>;

export interface DatabaseHandle {
  /** Writes, and the reads that delivery depends on (stream ends, gap fills). */
  db: Database;
  /**
   * What pages ask for (chat lists, badges, message pages, polling, replays): a pool of its own on
   * PostgreSQL, with a shorter statement timeout, so that a burst of heavy reads cannot hold the
   * connections that sends need. The same as `db` on PGlite.
   */
  reads: Database;
  kind: "pglite" | "postgres";
  /** Throws when the database cannot answer; used by `/ready`. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Set by scripts/build.ts in the bundle, which carries the migrations next to itself. */
declare const BUNDLED_MIGRATIONS_FOLDER: string | undefined;

/** The committed migrations: `drizzle/` of this package, or the bundle's copy of it. */
export const migrationsFolder = fileURLToPath(
  new URL(typeof BUNDLED_MIGRATIONS_FOLDER === "string" ? BUNDLED_MIGRATIONS_FOLDER : "../../drizzle", import.meta.url),
);

/** Any number that all chat instances agree on, so that only one of them migrates at a time. */
export const MIGRATION_LOCK_KEY = 8_086_001;

/**
 * How long PostgreSQL work may take before it is given up, so that nothing waits forever: a statement that
 * runs too long, a lock that is not granted, a transaction left open by a frozen or partitioned instance
 * (it would otherwise hold its locks until TCP keepalive gives up, two hours later), a pool that has no
 * connection to give.
 */
export interface PostgresTimeouts {
  statementMs: number;
  lockMs: number;
  idleInTransactionMs: number;
  /** Waiting for a connection from the pool (or for a new one to open). */
  connectMs: number;
}

export const defaultPostgresTimeouts: PostgresTimeouts = {
  statementMs: 10_000,
  lockMs: 5_000,
  idleInTransactionMs: 10_000,
  connectMs: 5_000,
};

/** The pool of page reads: its size and its statement timeout. */
export interface ReadPoolOptions {
  size: number;
  statementMs: number;
}

export const defaultReadPool: ReadPoolOptions = { size: 2, statementMs: 5_000 };

export type DatabaseOptions =
  | { url: string; poolSize?: number; timeouts?: Partial<PostgresTimeouts>; readPool?: Partial<ReadPoolOptions> }
  | { dataDir: string }
  | { inMemory: true };

/**
 * Opens PostgreSQL (with `url`) or embedded PGlite (in `dataDir`, or in memory for tests)
 * and applies the committed migrations before returning.
 */
export async function openDatabase(options: DatabaseOptions, onQuery?: QueryObserver): Promise<DatabaseHandle> {
  if ("url" in options) {
    return openPostgres(
      options.url,
      options.poolSize ?? 10,
      { ...defaultPostgresTimeouts, ...options.timeouts },
      { ...defaultReadPool, ...options.readPool },
      onQuery,
    );
  }
  if ("dataDir" in options) mkdirSync(options.dataDir, { recursive: true });
  const client = new PGlite("dataDir" in options ? options.dataDir : undefined);
  const db = drizzlePglite(client, { schema });
  await migratePglite(db, { migrationsFolder });
  return {
    db: db as unknown as Database,
    reads: db as unknown as Database,
    kind: "pglite",
    ping: async () => {
      await client.query("select 1");
    },
    close: () => client.close(),
  };
}

/** A pool whose every session carries the limits of `timeouts`. */
function createPool(url: string, max: number, timeouts: PostgresTimeouts, onQuery?: QueryObserver): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max,
    connectionTimeoutMillis: timeouts.connectMs,
    // Set by the server on every session of the pool.
    statement_timeout: timeouts.statementMs,
    lock_timeout: timeouts.lockMs,
    idle_in_transaction_session_timeout: timeouts.idleInTransactionMs,
    // A server that vanished (a partition, a dead host) is noticed in seconds, not after two hours.
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
  // An idle client that loses its server emits 'error' on the pool; without a handler it crashes the process.
  pool.on("error", () => {});
  // While a client is checked out the pool stops listening to it: a connection lost mid-query would
  // otherwise emit an unhandled 'error'. The query itself still fails and is reported by its caller.
  pool.on("connect", (client) => {
    client.on("error", () => {});
    if (onQuery) timeQueries(client, onQuery);
  });
  return pool;
}

async function openPostgres(
  url: string,
  max: number,
  timeouts: PostgresTimeouts,
  readPool: ReadPoolOptions,
  onQuery?: QueryObserver,
): Promise<DatabaseHandle> {
  const pool = createPool(url, max, timeouts, onQuery);
  const readsPool = createPool(url, readPool.size, { ...timeouts, statementMs: readPool.statementMs }, onQuery);
  const migrationClient = await pool.connect();
  try {
    const migrationDb = drizzleNodePg(migrationClient, { schema });
    // A migration may take long, and so may another instance's that this one waits for: no limits here.
    await migrationDb.execute(sql`set statement_timeout = 0`);
    await migrationDb.execute(sql`set lock_timeout = 0`);
    // A backend waiting for a lock does not notice that its client has gone: an instance stopped while it waits
    // for another's migrations would leave a session that takes the lock later, for nobody. This makes the
    // server look for the client every second while it waits (PostgreSQL 14+).
    await migrationDb.execute(sql`set client_connection_check_interval = 1000`);
    await migrationDb.execute(sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`);
    try {
      await migrateNodePg(migrationDb, { migrationsFolder });
    } finally {
      await migrationDb.execute(sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`);
      await migrationDb.execute(sql`reset statement_timeout`);
      await migrationDb.execute(sql`reset lock_timeout`);
      await migrationDb.execute(sql`reset client_connection_check_interval`);
    }
  } finally {
    migrationClient.release();
  }
  const db = drizzleNodePg(pool, { schema });
  return {
    db: db as unknown as Database,
    reads: drizzleNodePg(readsPool, { schema }) as unknown as Database,
    kind: "postgres",
    ping: async () => {
      await pool.query("select 1");
    },
    close: async () => {
      await Promise.all([pool.end(), readsPool.end()]);
    },
  };
}
