import { randomBytes } from "node:crypto";
import pg from "pg";
import type { DatabaseOptions } from "../../src/db/client.ts";

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
