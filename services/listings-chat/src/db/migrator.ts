/**
 * Applies the SQL files of `drizzle/` (drizzle-kit writes them; its journal `meta/_journal.json` orders them)
 * so that a database in use is not stalled:
 * - each file in its own transaction, so that its locks last as long as that file and no longer; a file whose
 *   top comment lines include `-- migrate: no-transaction` runs its statements one by one outside any transaction
 *   (`CREATE/DROP INDEX CONCURRENTLY`), and must therefore be safe to run again from its start;
 * - DDL waits at most `lockTimeoutMs` for a lock (instead of queueing every query behind it): a file that
 *   times out (55P03) is rolled back and tried again after a backoff, then start-up fails naming the file and
 *   the sessions that held the locks;
 * - every applied file is recorded with a sha256 of its content: an applied file that was edited, or that
 *   left the folder, stops start-up, since the database no longer matches what the folder says;
 * - a database migrated by drizzle's own migrator (drizzle.__drizzle_migrations) is adopted: the files it
 *   applied count as applied, and nothing runs again;
 * - one instance migrates at a time (a session advisory lock on PostgreSQL; PGlite has one connection);
 * - after the versioned files, the repeatable sources of `drizzle/functions/` (one file per SQL function,
 *   repeatable.ts): each applied when new or when its checksum changed, in its own transaction under the same
 *   lock timeout and retries, recorded with kind `repeatable`. A file removed from that folder is not dropped
 *   from the database: the running release may still call the function; dropping it is a contract step;
 * - a versioned file whose top comment lines include `-- migrate: batches` is a backfill: its one statement
 *   changes one batch of rows not done yet and returns a row for each; it runs again, each batch its own
 *   transaction, until a batch returns nothing, so no backfill holds a table's rows or its WAL in one transaction;
 * - a versioned file whose top comment lines include `-- migrate: contract` drops what an older release uses:
 *   it is held back while an instance of an older release is still serving (instance-registry.ts), and the
 *   files after it are applied; a later run applies it once those instances have gone;
 * - a database that a newer release migrated (applied files after this folder's last, none of them a contract
 *   file) is left as it is: the expand files of the next release are made to keep this one working. Its
 *   repeatable files are then not applied either, so that an older instance starting during a rollout does
 *   not put its older functions back.
 *
 * Why not a maintained runner: node-pg-migrate and graphile-migrate take a `pg` connection string or client
 * and do not run on PGlite, which development and half of the tests use; drizzle's own migrator runs all
 * pending files in one transaction and checks neither hashes nor lock waits. This one is the few rules above
 * over the files drizzle-kit already generates.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { PGlite } from "@electric-sql/pglite";
import type pg from "pg";
import {
  forgetLongGoneInstances,
  INSTANCE_LIVE_WINDOW_MS,
  INSTANCES_TABLE,
  instancesTableDdl,
  liveInstancesBehind,
  type OlderInstance,
} from "./instance-registry.ts";
import { checksumOf, migrationMarks, readRepeatableFiles, statementsOf } from "./repeatable.ts";
import { sqlStateOf } from "./retry.ts";

/** Any number that all chat instances agree on, so that only one of them migrates at a time. */
export const MIGRATION_LOCK_KEY = 8_086_001;

/** The top comment line that makes a file run outside a transaction. */
export const NO_TRANSACTION_MARK = "-- migrate: no-transaction";

/** The top comment line of a versioned file that drops what an older release may still use. */
export const CONTRACT_MARK = "-- migrate: contract";

/**
 * The top comment line of a versioned file that is a backfill: its one statement does one batch (a few
 * thousand rows, `LIMIT`ed, only rows not done yet) and returns a row per row it changed (`RETURNING 1`); the
 * runner runs it again, each batch its own transaction, until a batch returns nothing.
 */
export const BATCHES_MARK = "-- migrate: batches";

/** Where applied files are recorded: a schema of its own, so that `public` holds only what schema.ts names. */
export const MIGRATIONS_TABLE = "lc_migrations.schema_migrations";

const lockNotAvailable = "55P03";
const deadlockDetected = "40P01";

/**
 * A try that lost on locks and is worth another: a lock not granted in time, or a deadlock with the traffic
 * (PostgreSQL rolled the file's transaction back; a no-transaction file runs again from its start).
 */
function lostOnLocks(error: unknown): boolean {
  const code = sqlStateOf(error);
  return code === lockNotAvailable || code === deadlockDetected;
}

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
  /** Held back while an instance of an older release is serving. */
  contract: boolean;
  /** A backfill: its one statement run batch after batch until it changes nothing. */
  batches: boolean;
  statements: string[];
}

export interface MigrationOptions {
  /** How long DDL waits for a lock before the file is rolled back and retried. */
  lockTimeoutMs?: number;
  /** Tries per file before start-up fails. */
  attempts?: number;
  /** The wait after the first timed-out try; doubled after each further one. */
  backoffMs?: number;
  /** An instance seen within this window still counts as serving (instance-registry.ts). */
  liveWindowMs?: number;
  /** The pause between two batches of a backfill, so that vacuum and replicas keep up with it. */
  batchPauseMs?: number;
  /** How often an instance tries the migration lock while another one migrates. */
  lockPollMs?: number;
}

export const defaultMigrationOptions: Required<MigrationOptions> = {
  lockTimeoutMs: 2_000,
  attempts: 5,
  backoffMs: 1_000,
  liveWindowMs: INSTANCE_LIVE_WINDOW_MS,
  lockPollMs: 200,
  batchPauseMs: 20,
};

export interface AppliedFile {
  name: string;
  ms: number;
  attempts: number;
}

export interface MigrationReport {
  /** Versioned files applied now, with their time. */
  applied: AppliedFile[];
  /** Files found applied by drizzle's migrator and recorded as applied. */
  adopted: string[];
  /** Repeatable files applied now (new, or changed since they were applied): `functions/lc_iso`. */
  repeatable: AppliedFile[];
  /** Contract files not applied, and the instances of older releases they wait for. */
  heldBack: Array<{ name: string; reason: string; instances: OlderInstance[] }>;
  /** Applied files after this folder's last: a newer release migrated the database. */
  ahead: string[];
  /** The versioned files of the folder, in order: what this release was built with. */
  known: string[];
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
    const marks = migrationMarks(content).map((mark) => `-- migrate: ${mark}`);
    const statements = statementsOf(content);
    const batches = marks.includes(BATCHES_MARK);
    if (batches && (statements.length !== 1 || marks.includes(NO_TRANSACTION_MARK))) {
      throw new MigrationError(
        `${path}: a "${BATCHES_MARK}" file holds exactly one statement (one batch, run again until it returns no ` +
          `row) and runs each batch in a transaction of its own; it has ${statements.length}`,
      );
    }
    return {
      name: tag,
      checksum: checksumOf(content),
      when,
      noTransaction: marks.includes(NO_TRANSACTION_MARK),
      contract: marks.includes(CONTRACT_MARK),
      batches,
      statements,
    };
  });
}

/** One file to apply and record: a versioned file or a repeatable one. */
interface Step {
  /** As recorded in the migrations table. */
  name: string;
  /** The file, for messages: `0003_write_functions.sql`, `functions/lc_iso.sql`. */
  label: string;
  checksum: string;
  statements: string[];
  noTransaction: boolean;
  kind: "versioned" | "repeatable";
  contract: boolean;
  batches: boolean;
}

const versionedStep = (file: MigrationFile): Step => ({
  name: file.name,
  label: `${file.name}.sql`,
  checksum: file.checksum,
  statements: file.statements,
  noTransaction: file.noTransaction,
  kind: "versioned",
  contract: file.contract,
  batches: file.batches,
});

interface AppliedRow {
  name: string;
  checksum: string;
  kind: "versioned" | "repeatable";
  contract: boolean;
}

/**
 * The session advisory lock that makes instances migrate one at a time, tried every `pollMs` rather than waited
 * for: `pg_advisory_lock` waits inside a statement, whose snapshot a `CREATE INDEX CONCURRENTLY` of the
 * instance holding the lock must wait out, and that instance's lock is what the statement waits for: a
 * deadlock (seen with three instances starting together on 0012). Between tries this session holds nothing.
 */
async function takeMigrationLock(connection: MigrationConnection, pollMs: number): Promise<void> {
  for (;;) {
    const [row] = await connection.rows<{ locked: boolean }>("select pg_try_advisory_lock($1) as locked", [
      MIGRATION_LOCK_KEY,
    ]);
    if (row?.locked) return;
    await sleep(pollMs);
  }
}

/** Brings the database of `connection` to the files of `folder`; see the top of this module. */
export async function runMigrations(
  connection: MigrationConnection,
  folder: string,
  options: MigrationOptions = {},
): Promise<MigrationReport> {
  const settings = { ...defaultMigrationOptions, ...options };
  const files = readMigrationFiles(folder);
  // Read (and ordered) before anything runs: a bad "-- migrate: after" line stops here, not half-way.
  const repeatables = readRepeatableFiles(folder);
  const postgres = connection.kind === "postgres";
  // A migration may take long, and so may another instance's that this one waits for: the limits are the
  // lock timeout set around each file, not a statement timeout.
  await connection.run("set statement_timeout = 0; set lock_timeout = 0");
  if (postgres) {
    // A backend waiting for a lock does not notice that its client has gone: an instance stopped while its DDL
    // waits would leave a session that takes the lock later, for nobody. This makes the server look for the
    // client every second while it waits (PostgreSQL 14+).
    await connection.run("set client_connection_check_interval = 1000");
    await takeMigrationLock(connection, settings.lockPollMs);
  }
  try {
    await createMigrationTables(connection);
    const adopted = await adoptDrizzleHistory(connection, files);
    const rows = await connection.rows<AppliedRow>(`select name, checksum, kind, contract from ${MIGRATIONS_TABLE}`);
    const versioned = new Map(rows.filter((r) => r.kind === "versioned").map((r) => [r.name, r]));
    const ahead = checkAppliedFiles(versioned, files, folder);
    const report: MigrationReport = {
      applied: [],
      adopted,
      repeatable: [],
      heldBack: [],
      ahead,
      known: files.map((f) => f.name),
    };
    for (const [index, file] of files.entries()) {
      if (versioned.has(file.name)) continue;
      // Its position among the files: an instance built with fewer has never seen it, and may use what it drops.
      const gate = file.contract ? () => liveInstancesBehind(connection, index + 1, settings.liveWindowMs) : undefined;
      const outcome = await applyWithRetries(connection, versionedStep(file), settings, gate);
      if ("heldBack" in outcome) {
        report.heldBack.push({
          name: file.name,
          reason: heldBackReason(index + 1, outcome.heldBack),
          instances: outcome.heldBack,
        });
      } else {
        report.applied.push(outcome);
      }
    }
    // A newer release's functions are not replaced by this older one's (see the top of this module).
    if (ahead.length > 0) return report;
    const repeatableChecksums = new Map(rows.filter((r) => r.kind === "repeatable").map((r) => [r.name, r.checksum]));
    for (const file of repeatables) {
      if (repeatableChecksums.get(file.name) === file.checksum) continue;
      const step: Step = {
        ...file,
        label: file.path,
        noTransaction: false,
        kind: "repeatable",
        contract: false,
        batches: false,
      };
      const outcome = await applyWithRetries(connection, step, settings);
      if (!("heldBack" in outcome)) report.repeatable.push(outcome);
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
 * The migrations table, with the columns this release added made on a table an earlier release created
 * (constant defaults: no rewrite; only when missing, so that a start takes no lock on it otherwise), and the
 * instances' table, without the rows of instances long gone.
 */
async function createMigrationTables(connection: MigrationConnection): Promise<void> {
  await connection.run(`create schema if not exists lc_migrations;
    create table if not exists ${MIGRATIONS_TABLE} (
      name text primary key,
      checksum text not null,
      applied_at timestamptz not null default now(),
      ms integer
    )`);
  const [columns] = await connection.rows<{ n: number }>(
    `select count(*)::int as n from information_schema.columns
      where table_schema = 'lc_migrations' and table_name = 'schema_migrations' and column_name in ('kind', 'contract')`,
  );
  if ((columns?.n ?? 0) < 2) {
    // `kind`: versioned (a journal entry) or repeatable (functions/); `contract`: a file marked so, which an
    // older release starting later must not run against (checkAppliedFiles).
    await connection.run(`alter table ${MIGRATIONS_TABLE}
      add column if not exists kind text not null default 'versioned',
      add column if not exists contract boolean not null default false`);
  }
  await connection.run(instancesTableDdl);
  await forgetLongGoneInstances(connection);
}

function heldBackReason(position: number, instances: OlderInstance[]): string {
  const shown = instances
    .slice(0, 3)
    .map(
      (i) =>
        `${i.instanceId} (built with ${i.migrations} migrations, newest ${i.newestMigration}, seen ${i.secondsAgo} s ago)`,
    )
    .join(", ");
  return (
    `contract migration number ${position} waits for ${instances.length} instance(s) of an older release: ${shown}` +
    `${instances.length > 3 ? ", …" : ""}; it is applied by the first run after they have stopped ` +
    "(the next release's migration, or any instance's start)"
  );
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

/**
 * Stops when the folder no longer matches what the database applied. Returns the applied files after the
 * folder's last: a newer release's, which this one works beside unless one of them is a contract file.
 */
function checkAppliedFiles(applied: Map<string, AppliedRow>, files: MigrationFile[], folder: string): string[] {
  const byName = new Map(files.map((f) => [f.name, f]));
  const newestKnown = files.at(-1)?.name ?? "";
  const ahead: string[] = [];
  for (const [name, { checksum, contract }] of [...applied].sort(([a], [b]) => a.localeCompare(b))) {
    const file = byName.get(name);
    if (!file && name > newestKnown) {
      if (contract) {
        throw new MigrationError(
          `this release is older than the database: contract migration ${name}.sql was applied, and it drops what ` +
            `this release (newest migration ${newestKnown}.sql) may use. Deploy the release that has it, or a newer one`,
        );
      }
      ahead.push(name);
      continue;
    }
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
  return ahead;
}

/**
 * The wait before try number `attempt` (2, 3, …) of something that lost on locks: `backoffMs`, doubled for each
 * try after the second, with a little jitter so that instances that failed together do not come back together.
 */
function backoffBefore(attempt: number, backoffMs: number): number {
  return backoffMs * 2 ** (attempt - 2) * (0.8 + Math.random() * 0.4);
}

/** What decides whether a contract file may run now: the older instances it waits for (none: it runs). */
type ContractGate = () => Promise<OlderInstance[]>;

async function applyWithRetries(
  connection: MigrationConnection,
  step: Step,
  settings: Required<MigrationOptions>,
  gate?: ContractGate,
): Promise<AppliedFile | { heldBack: OlderInstance[] }> {
  for (let attempt = 1; ; attempt++) {
    const started = performance.now();
    try {
      const heldBack = await applyFile(connection, step, settings, gate, () => Math.round(performance.now() - started));
      if (heldBack.length > 0) return { heldBack };
      return { name: step.name, ms: Math.round(performance.now() - started), attempts: attempt };
    } catch (error) {
      if (!lostOnLocks(error)) {
        if (error instanceof MigrationError) throw error;
        throw new MigrationError(`migration ${step.label} failed: ${messageOf(error)}`, { cause: error });
      }
      if (attempt >= settings.attempts) {
        const holders = connection.kind === "postgres" ? await lockHolders(connection) : [];
        throw new MigrationError(
          `migration ${step.label} could not take its locks within ${settings.lockTimeoutMs} ms, ` +
            `${attempt} times: ${holders.length > 0 ? `held by ${holders.join("; ")}` : "the holders have gone since"}. ` +
            "End or wait out those sessions and start again; a migration must not need a lock that long " +
            "readers or writers hold (see the README on migrations)",
          { cause: error },
        );
      }
      await sleep(backoffBefore(attempt + 1, settings.backoffMs));
    }
  }
}

/**
 * Runs a file's statements and records it, in one transaction unless it is a no-transaction file. A contract
 * file's gate is asked first, inside that transaction with the instances' table locked against writes: an
 * instance registering meanwhile waits until the file is committed, and then sees it (instance-registry.ts).
 * Returns the instances a held-back file waits for (none when it was applied).
 */
async function applyFile(
  connection: MigrationConnection,
  step: Step,
  { lockTimeoutMs, batchPauseMs, attempts, backoffMs }: Required<MigrationOptions>,
  gate: ContractGate | undefined,
  elapsedMs: () => number,
): Promise<OlderInstance[]> {
  // A repeatable file is recorded again with its new checksum; a versioned one once (a second insert fails).
  const record =
    step.kind === "repeatable"
      ? `insert into ${MIGRATIONS_TABLE} (name, checksum, ms, kind, contract) values ($1, $2, $3, $4, $5)
          on conflict (name) do update set checksum = excluded.checksum, ms = excluded.ms, applied_at = now()`
      : `insert into ${MIGRATIONS_TABLE} (name, checksum, ms, kind, contract) values ($1, $2, $3, $4, $5)`;
  const recordParams = () => [step.name, step.checksum, elapsedMs(), step.kind, step.contract];
  if (step.batches) {
    // A backfill outside any one transaction: each batch commits on its own, so its row locks and its WAL are a
    // batch's, not the table's. Stopped half-way (a crash, a lock time-out), it goes on where it was: the
    // statement picks only rows not done yet. Recorded once a batch finds nothing left.
    const heldBack = gate ? await gate() : [];
    if (heldBack.length > 0) return heldBack;
    const [statement] = step.statements;
    await connection.run(`set lock_timeout = ${lockTimeoutMs}`);
    try {
      // A batch that lost on locks is tried again after a backoff: a backfill of hours meets a few lock waits,
      // and only `attempts` of them in a row fail the file (which then starts again where it was).
      for (let lostInARow = 0; ; ) {
        let changed: number;
        try {
          changed = (await connection.rows(statement!)).length;
          lostInARow = 0;
        } catch (error) {
          if (!lostOnLocks(error) || ++lostInARow >= attempts) throw error;
          await sleep(backoffBefore(lostInARow + 1, backoffMs));
          continue;
        }
        if (changed === 0) break;
        if (batchPauseMs > 0) await sleep(batchPauseMs);
      }
    } finally {
      await connection.run("set lock_timeout = 0");
    }
    await connection.rows(record, recordParams());
    return [];
  }
  if (step.noTransaction) {
    // No transaction to hold the instances' table locked in: the check alone. (A no-transaction file is for
    // CREATE/DROP INDEX CONCURRENTLY: an index dropped under an older release makes its queries slower, not wrong.)
    const heldBack = gate ? await gate() : [];
    if (heldBack.length > 0) return heldBack;
    try {
      for (const statement of step.statements) {
        // A CONCURRENTLY statement holds and queues for nothing stronger than SHARE UPDATE EXCLUSIVE (reads and
        // writes go on), but waits for every transaction open anywhere in the database (its snapshot): under a
        // lock time-out, a backup or a report open 2 s would cancel it after the build, leave an invalid index
        // behind and make the next try build it again. Only other statements are bounded.
        await connection.run(`set lock_timeout = ${waitsOnlyForSnapshots(statement) ? 0 : lockTimeoutMs}`);
        await connection.run(statement);
      }
    } finally {
      await connection.run("set lock_timeout = 0");
    }
    await connection.rows(record, recordParams());
    return [];
  }
  await connection.run(`begin; set local lock_timeout = ${lockTimeoutMs}`);
  try {
    if (gate) {
      await connection.run(`lock table ${INSTANCES_TABLE} in share mode`);
      const heldBack = await gate();
      if (heldBack.length > 0) {
        await connection.run("rollback");
        return heldBack;
      }
    }
    for (const statement of step.statements) await connection.run(statement);
    await connection.rows(record, recordParams());
    await connection.run("commit");
    return [];
  } catch (error) {
    // A broken connection has no transaction left to roll back; the error that broke it is the one to report.
    await connection.run("rollback").catch(() => {});
    throw error;
  }
}

/** `CREATE/DROP INDEX CONCURRENTLY` (and `REINDEX … CONCURRENTLY`): comments aside, the keyword is the sign. */
export function waitsOnlyForSnapshots(statement: string): boolean {
  return /\bconcurrently\b/i.test(statement.replace(/--[^\n]*/g, ""));
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
