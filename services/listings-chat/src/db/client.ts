import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { drizzle as drizzleNodePg } from "drizzle-orm/node-postgres";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import pg from "pg";
import { type MigrationReport, pgliteMigrationConnection, pgMigrationConnection, runMigrations } from "./migrator.ts";
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
  /** What opening it migrated. */
  migrations: MigrationReport;
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

export { MIGRATION_LOCK_KEY } from "./migrator.ts";

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
  | {
      url: string;
      /**
       * MIGRATION_DATABASE_URL: where migrations run when set, e.g. straight to PostgreSQL while `url` goes
       * through a transaction pooler (the advisory lock and the session settings need a session of their own).
       */
      migrationUrl?: string;
      poolSize?: number;
      timeouts?: Partial<PostgresTimeouts>;
      readPool?: Partial<ReadPoolOptions>;
    }
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
      options.migrationUrl ?? options.url,
      options.poolSize ?? 10,
      { ...defaultPostgresTimeouts, ...options.timeouts },
      { ...defaultReadPool, ...options.readPool },
      onQuery,
    );
  }
  if ("dataDir" in options) mkdirSync(options.dataDir, { recursive: true });
  const client = new PGlite("dataDir" in options ? options.dataDir : undefined);
  const migrations = await runMigrations(pgliteMigrationConnection(client), migrationsFolder).catch(async (error) => {
    await client.close();
    throw error;
  });
  const db = drizzlePglite(client, { schema });
  return {
    db: db as unknown as Database,
    reads: db as unknown as Database,
    kind: "pglite",
    migrations,
    ping: async () => {
      await client.query("select 1");
    },
    close: () => client.close(),
  };
}

/**
 * The isolation every transaction of the service is written for. The write functions rely on READ COMMITTED
 * (each statement sees what committed before it, row locks wait for and then read the newest version): under
 * REPEATABLE READ most concurrent sends would fail with 40001. A server, role or database default is not
 * trusted to be that.
 */
export const TRANSACTION_ISOLATION = "read committed";

/**
 * `url` with `default_transaction_isolation` pinned in its startup `options` (kept with any the URL has):
 * node-postgres lets the URL's `options` replace the pool's, so they are joined here.
 */
export function withPinnedIsolation(url: string): string {
  const parsed = new URL(url);
  const pinned = `-c default_transaction_isolation=${TRANSACTION_ISOLATION.replace(/ /g, "\\ ")}`;
  const given = parsed.searchParams.get("options");
  parsed.searchParams.set("options", given ? `${given} ${pinned}` : pinned);
  return parsed.toString();
}

/** A pool whose every session carries the limits of `timeouts`, and READ COMMITTED as its isolation. */
function createPool(url: string, max: number, timeouts: PostgresTimeouts, onQuery?: QueryObserver): pg.Pool {
  const pool = new pg.Pool({
    connectionString: withPinnedIsolation(url),
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
  migrationUrl: string,
  max: number,
  timeouts: PostgresTimeouts,
  readPool: ReadPoolOptions,
  onQuery?: QueryObserver,
): Promise<DatabaseHandle> {
  // Migrated on a session of its own, not one of the pool's: the advisory lock and the session settings
  // belong to it, and it may be a different URL (never a transaction pooler's).
  const migrationClient = new pg.Client({
    connectionString: withPinnedIsolation(migrationUrl),
    connectionTimeoutMillis: timeouts.connectMs,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
  // A connection lost mid-migration fails the query in progress; without a handler it would crash the process.
  migrationClient.on("error", () => {});
  await migrationClient.connect();
  let migrations: MigrationReport;
  try {
    migrations = await runMigrations(pgMigrationConnection(migrationClient), migrationsFolder);
  } finally {
    await migrationClient.end().catch(() => {});
  }
  const pool = createPool(url, max, timeouts, onQuery);
  const readsPool = createPool(url, readPool.size, { ...timeouts, statementMs: readPool.statementMs }, onQuery);
  const db = drizzleNodePg(pool, { schema });
  return {
    db: db as unknown as Database,
    reads: drizzleNodePg(readsPool, { schema }) as unknown as Database,
    kind: "postgres",
    migrations,
    ping: async () => {
      await pool.query("select 1");
    },
    close: async () => {
      await Promise.all([pool.end(), readsPool.end()]);
    },
  };
}
