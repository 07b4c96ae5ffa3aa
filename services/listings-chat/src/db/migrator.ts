/**
 * Applies the SQL files of `drizzle/` (drizzle-kit writes them; its journal `meta/_journal.json` orders them)
 * so that a database in use is not stalled:
 * - each file in its own transaction, so that its locks last as long as that file and no longer; a file whose
 *   first line is `-- migrate: no-transaction` runs its statements one by one outside any transaction
 *   (`CREATE/DROP INDEX CONCURRENTLY`), and must therefore be safe to run again from its start;
 * - DDL waits at most `lockTimeoutMs` for a lock (instead of queueing every query behind it): a file that
 *   times out (55P03) is rolled back and tried again after a backoff, then start-up fails naming the file and
 *   the sessions that held the locks;
 * - every applied file is recorded with a sha256 of its content: an applied file that was edited, or that
 *   left the folder, stops start-up, since the database no longer matches what the folder says;
 * - a database migrated by drizzle's own migrator (drizzle.__drizzle_migrations) is adopted: the files it
 *   applied count as applied, and nothing runs again;
 * - one instance migrates at a time (a session advisory lock on PostgreSQL; PGlite has one connection).
 *
 * Why not a maintained runner: node-pg-migrate and graphile-migrate take a `pg` connection string or client
 * and do not run on PGlite, which development and half of the tests use; drizzle's own migrator runs all
 * pending files in one transaction and checks neither hashes nor lock waits. This one is the few rules above
 * over the files drizzle-kit already generates.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { PGlite } from "@electric-sql/pglite";
import type pg from "pg";
import { sqlStateOf } from "./retry.ts";

/** Any number that all chat instances agree on, so that only one of them migrates at a time. */
export const MIGRATION_LOCK_KEY = 8_086_001;

/** The first line that makes a file run outside a transaction. */
export const NO_TRANSACTION_MARK = "-- migrate: no-transaction";

/** Where applied files are recorded: a schema of its own, so that `public` holds only what schema.ts names. */
export const MIGRATIONS_TABLE = "lc_migrations.schema_migrations";

const lockNotAvailable = "55P03";

/** One session on the database: PostgreSQL's own connection (never a pooled one) or PGlite. */
export interface MigrationConnection {
  kind: "postgres" | "pglite";
  /** SQL text without parameters; may hold several statements. */
  run(text: string): Promise<void>;
  /** One statement with parameters, and its rows. */
  rows<T>(text: string, params?: unknown[]): Promise<T[]>;
}

/** A session of node-postgres: a client of its own, not one checked out of a pool shared with the service. */
export function pgMigrationConnection(client: pg.ClientBase): MigrationConnection {
  return {
    kind: "postgres",
    run: async (text) => {
      await client.query(text);
    },
    rows: async <T>(text: string, params?: unknown[]) => (await client.query(text, params)).rows as T[],
  };
}

/** PGlite: `exec` for text with several statements, `query` for one with parameters. */
export function pgliteMigrationConnection(client: PGlite): MigrationConnection {
  return {
    kind: "pglite",
    run: async (text) => {
      await client.exec(text);
    },
    rows: async <T>(text: string, params?: unknown[]) => (await client.query<T>(text, params)).rows,
  };
}

export interface MigrationFile {
  /** The journal's tag: the file is `<name>.sql`. */
  name: string;
  checksum: string;
  /** The journal's `when`: what drizzle recorded as `created_at`. */
  when: number;
  noTransaction: boolean;
  statements: string[];
}

export interface MigrationOptions {
  /** How long DDL waits for a lock before the file is rolled back and retried. */
  lockTimeoutMs?: number;
  /** Tries per file before start-up fails. */
  attempts?: number;
  /** The wait after the first timed-out try; doubled after each further one. */
  backoffMs?: number;
}

export const defaultMigrationOptions: Required<MigrationOptions> = {
  lockTimeoutMs: 2_000,
  attempts: 5,
  backoffMs: 1_000,
};

export interface MigrationReport {
  /** Files applied now, with their time. */
  applied: Array<{ name: string; ms: number; attempts: number }>;
  /** Files found applied by drizzle's migrator and recorded as applied. */
  adopted: string[];
}

/** A migration that could not be applied, or a folder that no longer matches the database. */
export class MigrationError extends Error {
  override name = "MigrationError";
}

/** The files the journal of `folder` lists, in its order. */
export function readMigrationFiles(folder: string): MigrationFile[] {
  const journalPath = join(folder, "meta", "_journal.json");
  if (!existsSync(journalPath)) throw new MigrationError(`${journalPath} is missing: run drizzle-kit generate`);
  const journal = JSON.parse(readFileSync(journalPath, "utf8")) as { entries: Array<{ tag: string; when: number }> };
  return journal.entries.map(({ tag, when }) => {
    const path = join(folder, `${tag}.sql`);
    if (!existsSync(path)) throw new MigrationError(`${path} is listed in ${journalPath} but missing`);
    // Line endings normalized: a checkout with CRLF is the same migration.
    const content = readFileSync(path, "utf8").replace(/\r\n/g, "\n");
    return {
      name: tag,
      checksum: createHash("sha256").update(content).digest("hex"),
      when,
      noTransaction: content.split("\n", 1)[0]?.trim() === NO_TRANSACTION_MARK,
      statements: content
        .split("--> statement-breakpoint")
        .map((s) => s.trim())
        .filter((s) => s.length > 0),
    };
  });
}

/** Brings the database of `connection` to the files of `folder`; see the top of this module. */
export async function runMigrations(
  connection: MigrationConnection,
  folder: string,
  options: MigrationOptions = {},
): Promise<MigrationReport> {
  const settings = { ...defaultMigrationOptions, ...options };
  const files = readMigrationFiles(folder);
  const postgres = connection.kind === "postgres";
  // A migration may take long, and so may another instance's that this one waits for: the limits are the
  // lock timeout set around each file, not a statement timeout.
  await connection.run("set statement_timeout = 0; set lock_timeout = 0");
  if (postgres) {
    // A backend waiting for a lock does not notice that its client has gone: an instance stopped while it
    // waits for another's migrations would leave a session that takes the lock later, for nobody. This makes
    // the server look for the client every second while it waits (PostgreSQL 14+).
    await connection.run("set client_connection_check_interval = 1000");
    await connection.rows("select pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
  }
  try {
    await connection.run(`create schema if not exists lc_migrations;
      create table if not exists ${MIGRATIONS_TABLE} (
        name text primary key,
        checksum text not null,
        applied_at timestamptz not null default now(),
        ms integer
      )`);
    const adopted = await adoptDrizzleHistory(connection, files);
    const applied = new Map(
      (await connection.rows<{ name: string; checksum: string }>(`select name, checksum from ${MIGRATIONS_TABLE}`)).map(
        (r) => [r.name, r.checksum],
      ),
    );
    checkAppliedFiles(applied, files, folder);
    const report: MigrationReport = { applied: [], adopted };
    for (const file of files.filter((f) => !applied.has(f.name))) {
      report.applied.push(await applyWithRetries(connection, file, settings));
    }
    return report;
  } finally {
    // Quietly: on a broken connection the session, and its lock, are gone anyway, and the error that broke
    // it is the one to report.
    await connection
      .run(
        postgres
          ? `select pg_advisory_unlock(${MIGRATION_LOCK_KEY}); reset statement_timeout; reset lock_timeout; reset client_connection_check_interval`
          : "reset statement_timeout; reset lock_timeout",
      )
      .catch(() => {});
  }
}

/**
 * On a database that drizzle's migrator brought up to date and this runner has not seen: the files drizzle
 * counts as applied (its rule: a `when` not after the newest `created_at`) are recorded with today's checksums.
 */
async function adoptDrizzleHistory(connection: MigrationConnection, files: MigrationFile[]): Promise<string[]> {
  const [ours] = await connection.rows<{ n: number }>(`select count(*)::int as n from ${MIGRATIONS_TABLE}`);
  if ((ours?.n ?? 0) > 0) return [];
  const [drizzle] = await connection.rows<{ exists: boolean }>(
    "select to_regclass('drizzle.__drizzle_migrations') is not null as exists",
  );
  if (!drizzle?.exists) return [];
  const [newest] = await connection.rows<{ at: string | null }>(
    "select max(created_at)::text as at from drizzle.__drizzle_migrations",
  );
  if (newest?.at == null) return [];
  const adopted = files.filter((f) => f.when <= Number(newest.at));
  for (const file of adopted) {
    await connection.rows(`insert into ${MIGRATIONS_TABLE} (name, checksum, ms) values ($1, $2, null)`, [
      file.name,
      file.checksum,
    ]);
  }
  return adopted.map((f) => f.name);
}

/** Stops when the folder no longer matches what the database applied. */
function checkAppliedFiles(applied: Map<string, string>, files: MigrationFile[], folder: string): void {
  const byName = new Map(files.map((f) => [f.name, f]));
  for (const [name, checksum] of applied) {
    const file = byName.get(name);
    if (!file) {
      throw new MigrationError(
        `migration ${name}.sql was applied to this database but is not in ${folder} (or its journal) any more: ` +
          "restore the file and its journal entry; to undo a migration, add a new one that does so",
      );
    }
    if (file.checksum !== checksum) {
      throw new MigrationError(
        `migration ${name}.sql changed after it was applied to this database (sha256 ${checksum.slice(0, 12)}… ` +
          `then, ${file.checksum.slice(0, 12)}… now): restore the applied content and add a new migration instead`,
      );
    }
  }
}

async function applyWithRetries(
  connection: MigrationConnection,
  file: MigrationFile,
  settings: Required<MigrationOptions>,
): Promise<{ name: string; ms: number; attempts: number }> {
  for (let attempt = 1; ; attempt++) {
    const started = performance.now();
    try {
      await applyFile(connection, file, settings.lockTimeoutMs, () => Math.round(performance.now() - started));
      return { name: file.name, ms: Math.round(performance.now() - started), attempts: attempt };
    } catch (error) {
      if (sqlStateOf(error) !== lockNotAvailable) {
        if (error instanceof MigrationError) throw error;
        throw new MigrationError(`migration ${file.name}.sql failed: ${messageOf(error)}`, { cause: error });
      }
      if (attempt >= settings.attempts) {
        const holders = connection.kind === "postgres" ? await lockHolders(connection) : [];
        throw new MigrationError(
          `migration ${file.name}.sql could not take its locks within ${settings.lockTimeoutMs} ms, ` +
            `${attempt} times: ${holders.length > 0 ? `held by ${holders.join("; ")}` : "the holders have gone since"}. ` +
            "End or wait out those sessions and start again; a migration must not need a lock that long " +
            "readers or writers hold (see the README on migrations)",
          { cause: error },
        );
      }
      const backoff = settings.backoffMs * 2 ** (attempt - 1);
      // A little jitter, so that instances that failed together do not come back together.
      await new Promise((resolve) => setTimeout(resolve, backoff * (0.8 + Math.random() * 0.4)));
    }
  }
}

async function applyFile(
  connection: MigrationConnection,
  file: MigrationFile,
  lockTimeoutMs: number,
  elapsedMs: () => number,
): Promise<void> {
  const record = `insert into ${MIGRATIONS_TABLE} (name, checksum, ms) values ($1, $2, $3)`;
  if (file.noTransaction) {
    await connection.run(`set lock_timeout = ${lockTimeoutMs}`);
    try {
      for (const statement of file.statements) await connection.run(statement);
    } finally {
      await connection.run("set lock_timeout = 0");
    }
    await connection.rows(record, [file.name, file.checksum, elapsedMs()]);
    return;
  }
  await connection.run(`begin; set local lock_timeout = ${lockTimeoutMs}`);
  try {
    for (const statement of file.statements) await connection.run(statement);
    await connection.rows(record, [file.name, file.checksum, elapsedMs()]);
    await connection.run("commit");
  } catch (error) {
    // A broken connection has no transaction left to roll back; the error that broke it is the one to report.
    await connection.run("rollback").catch(() => {});
    throw error;
  }
}

/** The other sessions of this database holding table locks, oldest transaction first: what a migration waited for. */
async function lockHolders(connection: MigrationConnection): Promise<string[]> {
  const holders = await connection.rows<{
    pid: number;
    mode: string;
    relation: string;
    state: string | null;
    seconds: number | null;
    application: string | null;
    query: string | null;
  }>(
    `select l.pid, l.mode, l.relation::regclass::text as relation, a.state,
        extract(epoch from now() - a.xact_start)::int as seconds, a.application_name as application,
        left(a.query, 120) as query
      from pg_locks l join pg_stat_activity a on a.pid = l.pid
      where l.granted and l.locktype = 'relation' and l.pid <> pg_backend_pid()
        and l.database = (select oid from pg_database where datname = current_database())
        and l.relation::regclass::text not like 'pg\\_%'
      order by a.xact_start nulls last limit 5`,
  );
  return holders.map(
    (h) =>
      `pid ${h.pid} (${h.mode} on ${h.relation}, ${h.state ?? "unknown state"}` +
      `${h.seconds == null ? "" : ` in a transaction for ${h.seconds} s`}` +
      `${h.application ? `, application "${h.application}"` : ""}${h.query ? `, last query "${h.query}"` : ""})`,
  );
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
