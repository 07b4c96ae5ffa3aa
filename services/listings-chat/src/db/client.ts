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
import * as schema from "./schema.ts";

export type Schema = typeof schema;
/** The database as every repository sees it: the same type on PGlite and on PostgreSQL. */
export type Database = PgDatabase<PgQueryResultHKT, Schema>;

export interface DatabaseHandle {
  db: Database;
  kind: "pglite" | "postgres";
  /** Throws when the database cannot answer; used by `/ready`. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export const migrationsFolder = fileURLToPath(new URL("../../drizzle", import.meta.url));

/** Any number that all chat instances agree on, so that only one of them migrates at a time. */
const MIGRATION_LOCK_KEY = 8_086_001;

export type DatabaseOptions = { url: string; poolSize?: number } | { dataDir: string } | { inMemory: true };

/**
 * Opens PostgreSQL (with `url`) or embedded PGlite (in `dataDir`, or in memory for tests)
 * and applies the committed migrations before returning.
 */
export async function openDatabase(options: DatabaseOptions): Promise<DatabaseHandle> {
  if ("url" in options) return openPostgres(options.url, options.poolSize ?? 10);
  if ("dataDir" in options) mkdirSync(options.dataDir, { recursive: true });
  const client = new PGlite("dataDir" in options ? options.dataDir : undefined);
  const db = drizzlePglite(client, { schema });
  await migratePglite(db, { migrationsFolder });
  return {
    db: db as unknown as Database,
    kind: "pglite",
    ping: async () => {
      await client.query("select 1");
    },
    close: () => client.close(),
  };
}

async function openPostgres(url: string, max: number): Promise<DatabaseHandle> {
  const pool = new pg.Pool({ connectionString: url, max });
  // An idle client that loses its server emits 'error' on the pool; without a handler it crashes the process.
  pool.on("error", () => {});
  // While a client is checked out the pool stops listening to it: a connection lost mid-query would
  // otherwise emit an unhandled 'error'. The query itself still fails and is reported by its caller.
  pool.on("connect", (client) => client.on("error", () => {}));
  const migrationClient = await pool.connect();
  try {
    const migrationDb = drizzleNodePg(migrationClient, { schema });
    await migrationDb.execute(sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`);
    try {
      await migrateNodePg(migrationDb, { migrationsFolder });
    } finally {
      await migrationDb.execute(sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`);
    }
  } finally {
    migrationClient.release();
  }
  const db = drizzleNodePg(pool, { schema });
  return {
    db: db as unknown as Database,
    kind: "postgres",
    ping: async () => {
      await pool.query("select 1");
    },
    close: () => pool.end(),
  };
}
