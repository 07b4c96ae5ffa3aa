import { randomBytes } from "node:crypto";
import { PGlite } from "@electric-sql/pglite";
import { drizzle as drizzleNodePg } from "drizzle-orm/node-postgres";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import pg from "pg";
import { afterAll, beforeAll } from "vitest";
import { type Database, type DatabaseHandle, type DatabaseOptions, openDatabase } from "../../src/db/client.ts";
import { pgliteMigrationConnection, pgMigrationConnection, runMigrations } from "../../src/db/migrator.ts";
import * as schema from "../../src/db/schema.ts";

/** A database a suite runs against; each `create()` makes a fresh one that `drop()` removes. */
export interface DatabaseTarget {
  name: "pglite" | "postgres";
  create(): Promise<{ options: DatabaseOptions; drop(): Promise<void> }>;
}

const pglite: DatabaseTarget = {
  name: "pglite",
  create: async () => ({ options: { inMemory: true }, drop: async () => {} }),
};

/** A new database on the server of `DATABASE_URL`, named for this run, dropped afterwards. */
function postgres(adminUrl: string): DatabaseTarget {
  return {
    name: "postgres",
    async create() {
      const name = `lc_test_${process.pid}_${randomBytes(4).toString("hex")}`;
      const admin = new pg.Client({ connectionString: adminUrl });
      await admin.connect();
      try {
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      const url = new URL(adminUrl);
      url.pathname = `/${name}`;
      return {
        options: { url: url.toString(), poolSize: 8 },
        async drop() {
          const dropper = new pg.Client({ connectionString: adminUrl });
          await dropper.connect();
          try {
            await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
          } finally {
            await dropper.end();
          }
        },
      };
    },
  };
}

/**
 * PGlite always; the real PostgreSQL whenever DATABASE_URL is set. In CI it must be set:
 * a suite that cannot reach the server there fails instead of passing on PGlite alone.
 */
export function databaseTargets(): DatabaseTarget[] {
  const url = process.env.DATABASE_URL;
  if (!url && process.env.CI)
    throw new Error("CI must set DATABASE_URL: the PostgreSQL run is what proves compatibility");
  return url ? [pglite, postgres(url)] : [pglite];
}

/**
 * A database of `target` for the suite being declared, migrated and opened before its tests, closed and dropped
 * after them: the handle, read through the returned function once `beforeAll` has run.
 */
export function suiteDatabase(target: DatabaseTarget): () => DatabaseHandle {
  let handle: DatabaseHandle | undefined;
  let drop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    const created = await target.create();
    drop = created.drop;
    handle = await openDatabase(created.options);
  });
  afterAll(async () => {
    await handle?.close();
    await drop?.();
  });
  return () => {
    if (!handle) throw new Error("the suite's database opens in beforeAll: read it inside a test");
    return handle;
  };
}

/** An empty database of a target, with nothing applied yet, and how to run a migrations folder on it. */
export interface UnmigratedDatabase {
  db: Database;
  /** As the service migrates: the runner, on a session of its own (PostgreSQL) or on the database (PGlite). */
  migrate(folder: string): Promise<void>;
}

/**
 * An empty database of `target` whose closing and dropping go on `cleanups` (the caller runs them, last first),
 * for tests that migrate step by step (to a given file, then on).
 */
export async function unmigratedDatabase(
  target: DatabaseTarget,
  cleanups: Array<() => Promise<void> | void>,
): Promise<UnmigratedDatabase> {
  if (target.name === "pglite") {
    const client = new PGlite();
    cleanups.push(() => client.close());
    return {
      db: drizzlePglite(client, { schema }) as unknown as Database,
      migrate: async (folder) => {
        await runMigrations(pgliteMigrationConnection(client), folder);
      },
    };
  }
  const created = await target.create();
  cleanups.push(created.drop);
  if (!("url" in created.options)) throw new Error("the PostgreSQL target has a URL");
  const { url } = created.options;
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  cleanups.push(() => pool.end());
  return {
    db: drizzleNodePg(pool, { schema }) as unknown as Database,
    migrate: async (folder) => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await runMigrations(pgMigrationConnection(client), folder);
      } finally {
        await client.end();
      }
    },
  };
}
