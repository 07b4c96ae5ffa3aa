/**
 * The migration runner (src/db/migrator.ts) on folders of its own: each file in its own transaction, files
 * outside any transaction, checksums, adopting a database that drizzle's migrator brought up, and on
 * PostgreSQL the lock timeout with its retries and the advisory lock between runners.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { drizzle as drizzleNodePg } from "drizzle-orm/node-postgres";
import { migrate as migrateNodePg } from "drizzle-orm/node-postgres/migrator";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { migrationsFolder } from "../src/db/client.ts";
import {
  BATCHES_MARK,
  MIGRATION_LOCK_KEY,
  MIGRATIONS_TABLE,
  type MigrationConnection,
  NO_TRANSACTION_MARK,
  pgliteMigrationConnection,
  pgMigrationConnection,
  readMigrationFiles,
  runMigrations,
} from "../src/db/migrator.ts";
import { readRepeatableFiles } from "../src/db/repeatable.ts";
import { databaseTargets } from "./support/databases.ts";
import { migrationsFolderCopy, writeMigrationFolder } from "./support/migration-folders.ts";

const breakpoint = "--> statement-breakpoint\n";

describe.each(databaseTargets())("the migration runner on $name", (target) => {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  function folder(files: Array<[tag: string, sql: string]>): string {
    const dir = mkdtempSync(join(tmpdir(), "lc-migrator-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    return writeMigrationFolder(dir, files);
  }

  interface Session {
    connection: MigrationConnection;
    /** drizzle's own migrator on the same database, as the service used to run it. */
    drizzleMigrate(folder: string): Promise<void>;
    url?: string;
  }

  /** A fresh empty database of this target and a session on it. */
  async function emptyDatabase(): Promise<Session> {
    if (target.name === "pglite") {
      const client = new PGlite();
      cleanups.push(() => client.close());
      return {
        connection: pgliteMigrationConnection(client),
        drizzleMigrate: (dir) => migratePglite(drizzlePglite(client), { migrationsFolder: dir }),
      };
    }
    const created = await target.create();
    cleanups.push(created.drop);
    if (!("url" in created.options)) throw new Error("the PostgreSQL target has a URL");
    const url = created.options.url;
    const client = await connect(url);
    return {
      connection: pgMigrationConnection(client),
      drizzleMigrate: (dir) => migrateNodePg(drizzleNodePg(client), { migrationsFolder: dir }),
      url,
    };
  }

  async function connect(url: string, applicationName?: string): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: url, application_name: applicationName });
    client.on("error", () => {});
    await client.connect();
    cleanups.push(() => client.end().catch(() => {}));
    return client;
  }

  const recorded = async (connection: MigrationConnection) =>
    (await connection.rows<{ name: string }>(`select name from ${MIGRATIONS_TABLE} order by name`)).map((r) => r.name);

  const tableExists = async (connection: MigrationConnection, name: string) =>
    (await connection.rows<{ found: boolean }>("select to_regclass($1) is not null as found", [name]))[0]?.found;

  it("applies each file in its own transaction: a failing second file leaves the first applied", async () => {
    const { connection } = await emptyDatabase();
    const dir = folder([
      ["0000_first", "create table first_table (id int);"],
      ["0001_second", `create table second_table (id int);\n${breakpoint}select 1 / 0;`],
    ]);
    await expect(runMigrations(connection, dir)).rejects.toThrow(/migration 0001_second\.sql failed: division by zero/);
    expect(await tableExists(connection, "first_table")).toBe(true);
    expect(await tableExists(connection, "second_table")).toBe(false);
    expect(await recorded(connection)).toEqual(["0000_first"]);

    // Fixed (never applied, so it may still change), it runs on the next start, alone.
    writeMigrationFolder(dir, [
      ["0000_first", "create table first_table (id int);"],
      ["0001_second", "create table second_table (id int);"],
    ]);
    const report = await runMigrations(connection, dir);
    expect(report.applied.map((a) => a.name)).toEqual(["0001_second"]);
    expect(await recorded(connection)).toEqual(["0000_first", "0001_second"]);
  });

  it("runs a no-transaction file statement by statement: CREATE INDEX CONCURRENTLY", async () => {
    const { connection } = await emptyDatabase();
    const files: Array<[string, string]> = [
      ["0000_table", "create table items (id int);\ninsert into items select generate_series(1, 1000);"],
      [
        "0001_index",
        `${NO_TRANSACTION_MARK}\n-- Again from the start if interrupted: an invalid index left behind is dropped first.\n` +
          `drop index concurrently if exists items_id_idx;\n${breakpoint}create index concurrently items_id_idx on items (id);`,
      ],
    ];
    const dir = folder(files);
    expect(readMigrationFiles(dir).map((f) => f.noTransaction)).toEqual([false, true]);
    const report = await runMigrations(connection, dir);
    expect(report.applied.map((a) => a.name)).toEqual(["0000_table", "0001_index"]);
    const [index] = await connection.rows<{ valid: boolean }>(
      "select indisvalid as valid from pg_index where indexrelid = 'items_id_idx'::regclass",
    );
    expect(index?.valid).toBe(true);

    // The same statement without the mark is refused by PostgreSQL inside the file's transaction.
    writeMigrationFolder(dir, [...files, ["0002_other_index", "create index concurrently other_idx on items (id);"]]);
    await expect(runMigrations(connection, dir)).rejects.toThrow(
      /migration 0002_other_index\.sql failed: .*cannot run inside a transaction block/,
    );
  });

  it("runs a backfill file batch by batch, each batch its own transaction, until a batch changes nothing", async () => {
    const { connection } = await emptyDatabase();
    const backfill =
      `${BATCHES_MARK}\n-- One batch: 500 rows not done yet.\n` +
      "with batch as (select id from items where doubled is null order by id limit 500 for update skip locked)\n" +
      "update items set doubled = items.id * 2 from batch where items.id = batch.id returning 1;";
    const dir = folder([
      [
        "0000_table",
        "create table items (id int primary key, doubled int);\ninsert into items select generate_series(1, 5250);",
      ],
      ["0001_backfill", backfill],
      ["0002_after", "create table after_backfill (id int);"],
    ]);
    expect(readMigrationFiles(dir).map((f) => f.batches)).toEqual([false, true, false]);
    const report = await runMigrations(connection, dir, { batchPauseMs: 0 });
    expect(report.applied.map((a) => a.name)).toEqual(["0000_table", "0001_backfill", "0002_after"]);
    const [done] = await connection.rows<{ left: number; wrong: number; transactions: number }>(
      `select count(*) filter (where doubled is null)::int as "left",
              count(*) filter (where doubled <> id * 2)::int as wrong,
              count(distinct xmin::text)::int as transactions from items`,
    );
    // 11 batches (10 of 500 and one of 250), each committed on its own: 11 transactions wrote the rows.
    expect(done).toEqual({ left: 0, wrong: 0, transactions: 11 });

    // A backfill stopped half-way goes on where it was: the rows done stay done, the others are done next time.
    await connection.run(
      `update items set doubled = null where id > 3500; delete from ${MIGRATIONS_TABLE} where name = '0001_backfill'`,
    );
    const again = await runMigrations(connection, dir, { batchPauseMs: 0 });
    expect(again.applied.map((a) => a.name)).toEqual(["0001_backfill"]);
    const [resumed] = await connection.rows<{ left: number; transactions: number }>(
      `select count(*) filter (where doubled is null)::int as "left",
              count(distinct xmin::text) filter (where id > 3500)::int as transactions from items`,
    );
    expect(resumed).toEqual({ left: 0, transactions: 4 });

    // One batch is one statement: a file with two is refused before anything runs.
    writeMigrationFolder(dir, [
      ["0000_table", "create table items (id int primary key, doubled int);"],
      ["0001_backfill", `${BATCHES_MARK}\nselect 1;\n${breakpoint}select 2;`],
    ]);
    expect(() => readMigrationFiles(dir)).toThrow(
      /0001_backfill\.sql: a "-- migrate: batches" file holds exactly one statement/,
    );
  });

  it("refuses to start when an applied file changed or left the folder, and names it", async () => {
    const { connection } = await emptyDatabase();
    const files: Array<[string, string]> = [
      ["0000_a", "create table a (id int);"],
      ["0001_b", "create table b (id int);"],
      ["0002_c", "create table c (id int);"],
    ];
    const dir = folder(files);
    await runMigrations(connection, dir);

    writeMigrationFolder(dir, [files[0]!, ["0001_b", "create table b (id bigint);"], files[2]!]);
    await expect(runMigrations(connection, dir)).rejects.toThrow(
      /migration 0001_b\.sql changed after it was applied to this database .*add a new migration instead/,
    );

    // Left out between two files the folder has. (Files after the folder's last are a newer release's:
    // contract-migrations.integration.test.ts.)
    const shorter = folder([files[0]!, files[2]!]);
    await expect(runMigrations(connection, shorter)).rejects.toThrow(
      /migration 0001_b\.sql was applied to this database but is not in .* any more/,
    );
    // Line endings alone are not a change.
    writeMigrationFolder(dir, [files[0]!, ["0001_b", "create table b (id int);".replace(/\n/g, "\r\n")], files[2]!]);
    await expect(runMigrations(connection, dir)).resolves.toMatchObject({ applied: [] });
  });

  it("adopts a database that drizzle's migrator brought up: nothing runs again, every file is recorded", async () => {
    const { connection, drizzleMigrate } = await emptyDatabase();
    // Each file appends to a log: a file run twice would show in it.
    const files: Array<[string, string]> = [
      ["0000_log", `create table applied_log (n int);\n${breakpoint}insert into applied_log values (0);`],
      ["0001_one", "insert into applied_log values (1);"],
      ["0002_two", "insert into applied_log values (2);"],
    ];
    const dir = folder(files.slice(0, 2));
    await drizzleMigrate(dir);

    writeMigrationFolder(dir, files);
    const report = await runMigrations(connection, dir);
    expect(report.adopted).toEqual(["0000_log", "0001_one"]);
    expect(report.applied.map((a) => a.name)).toEqual(["0002_two"]);
    const log = await connection.rows<{ n: number }>("select n from applied_log order by n");
    expect(log.map((r) => r.n)).toEqual([0, 1, 2]);
    expect(await recorded(connection)).toEqual(["0000_log", "0001_one", "0002_two"]);
    // Once adopted, drizzle's table is not read again.
    await expect(runMigrations(connection, dir)).resolves.toMatchObject({ applied: [], adopted: [] });
  });

  it("adopts a database that drizzle's migrator brought to the last release before this runner", {
    timeout: 60_000,
  }, async () => {
    const { connection, drizzleMigrate } = await emptyDatabase();
    // The committed migrations up to 0011, the last that drizzle's migrator applied (it cannot run a
    // no-transaction file, which 0012 is).
    const committed = readMigrationFiles(migrationsFolder).map((f) => f.name);
    const lastByDrizzle = committed.indexOf("0011_send_counts_once") + 1;
    const before = migrationsFolderCopy(migrationsFolder, "0011_send_counts_once");
    cleanups.push(() => rmSync(before, { recursive: true, force: true }));
    await drizzleMigrate(before);

    const report = await runMigrations(connection, migrationsFolder);
    expect(report).toMatchObject({ adopted: committed.slice(0, lastByDrizzle), heldBack: [], ahead: [] });
    expect(report.applied.map((a) => a.name)).toEqual(committed.slice(lastByDrizzle));
    // drizzle's migrator knows nothing of functions/: the runner applies it after the versioned files.
    const functions = readRepeatableFiles(migrationsFolder).map((f) => f.name);
    expect(report.repeatable.map((a) => a.name)).toEqual(functions);
    expect(await recorded(connection)).toEqual([...committed, ...functions].sort());
  });

  describe.runIf(target.name === "postgres")("with other sessions (PostgreSQL)", () => {
    const tableAndColumn = (): Array<[string, string]> => [
      ["0000_table", "create table busy (id int);"],
      ["0001_column", "alter table busy add column note text;"],
    ];

    /** A session that holds ACCESS EXCLUSIVE on `busy` until `release()`. */
    async function holdBusyTable(url: string) {
      const holder = await connect(url, "lock-holder-under-test");
      await holder.query("begin");
      await holder.query("lock table busy in access exclusive mode");
      return { release: () => holder.query("commit") };
    }

    it("builds an index CONCURRENTLY past the lock timeout while another transaction holds a snapshot", async () => {
      // CREATE INDEX CONCURRENTLY waits for every open transaction of the database, as a lock wait: under the
      // files' lock timeout a backup or a report open that long cancelled it after the build, leaving an invalid
      // index. It blocks no reads or writes, so it runs without the time-out.
      const { connection, url } = await emptyDatabase();
      const lockTimeoutMs = 300;
      const files: Array<[string, string]> = [
        [
          "0000_tables",
          "create table items (id int);\ninsert into items select generate_series(1, 1000);\ncreate table other (id int);",
        ],
        ["0001_index", `${NO_TRANSACTION_MARK}\ncreate index concurrently items_id_idx on items (id);`],
      ];
      await runMigrations(connection, folder(files.slice(0, 1)));
      const reader = await connect(url!, "lc-test-long-reader");
      await reader.query("begin isolation level repeatable read");
      await reader.query("select count(*) from other");

      const migrating = runMigrations(connection, folder(files), { lockTimeoutMs, attempts: 1 });
      // Until the build has waited for the reader three times the lock timeout (the server's clock, read by a
      // session outside the reader's transaction, whose clock and statistics stand still).
      const observer = await connect(url!);
      const waitedMs = async () =>
        (
          await observer.query<{ ms: number | null }>(
            `select (extract(epoch from now() - state_change) * 1000)::int as ms from pg_stat_activity
              where wait_event_type = 'Lock' and query ilike '%create index concurrently%' and pid <> pg_backend_pid()`,
          )
        ).rows[0]?.ms ?? 0;
      const deadline = Date.now() + 10_000;
      while ((await waitedMs()) < 3 * lockTimeoutMs && Date.now() < deadline) {
        await observer.query("select pg_sleep(0.05)");
      }
      expect(await waitedMs()).toBeGreaterThanOrEqual(3 * lockTimeoutMs);
      await reader.query("commit");

      const report = await migrating;
      expect(report.applied.map((a) => a.name)).toEqual(["0001_index"]);
      const [index] = await connection.rows<{ valid: boolean }>(
        "select indisvalid as valid from pg_index where indexrelid = 'items_id_idx'::regclass",
      );
      expect(index?.valid).toBe(true);
    }, 20_000);

    it("retries a file whose lock is held past its lock timeout, and applies it once the lock is free", async () => {
      const { connection, url } = await emptyDatabase();
      const dir = folder(tableAndColumn());
      await runMigrations(connection, folder(tableAndColumn().slice(0, 1)));
      const holder = await holdBusyTable(url!);
      const released = new Promise((resolve) => setTimeout(resolve, 3_000)).then(() => holder.release());

      const started = performance.now();
      const report = await runMigrations(connection, dir, { lockTimeoutMs: 2_000, attempts: 5, backoffMs: 1_000 });
      await released;
      expect(report.applied).toEqual([{ name: "0001_column", ms: expect.any(Number), attempts: 2 }]);
      expect(performance.now() - started).toBeGreaterThanOrEqual(2_900);
      const columns = await connection.rows<{ name: string }>(
        "select column_name::text as name from information_schema.columns where table_name = 'busy' order by 1",
      );
      expect(columns.map((c) => c.name)).toEqual(["id", "note"]);
    }, 20_000);

    it("fails naming the file and the session that held the lock when it is held through every try", async () => {
      const { connection, url } = await emptyDatabase();
      const dir = folder(tableAndColumn());
      await runMigrations(connection, folder(tableAndColumn().slice(0, 1)));
      const holder = await holdBusyTable(url!);
      try {
        await expect(
          runMigrations(connection, dir, { lockTimeoutMs: 200, attempts: 3, backoffMs: 50 }),
        ).rejects.toThrow(
          /migration 0001_column\.sql could not take its locks within 200 ms, 3 times: held by pid \d+ \(AccessExclusiveLock on busy, idle in transaction .*application "lock-holder-under-test"/,
        );
      } finally {
        await holder.release();
      }
      expect(await recorded(connection)).toEqual(["0000_table"]);
      // The runner let go of its advisory lock and session settings.
      const [settings] = await connection.rows<{ lock: string; held: number }>(
        "select current_setting('lock_timeout') as lock, (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as held",
      );
      expect(settings).toEqual({ lock: "0", held: 0 });
    });

    it("lets one runner migrate at a time: the other waits for the advisory lock, then finds nothing to do", async () => {
      const { connection, url } = await emptyDatabase();
      const dir = folder(tableAndColumn());
      const other = await connect(url!);
      const observer = await connect(url!);

      // While a test session holds the lock, a runner waits for it: it tries it, and tries again later (it does
      // not wait inside a statement: see takeMigrationLock).
      await observer.query("select pg_advisory_lock($1)", [MIGRATION_LOCK_KEY]);
      const first = runMigrations(connection, dir, { lockPollMs: 20 });
      const tried = async () =>
        (
          await observer.query<{ n: number }>(
            "select count(*)::int as n from pg_stat_activity where pid <> pg_backend_pid() and datname = current_database() and query like '%pg_try_advisory_lock%'",
          )
        ).rows[0]!.n;
      // Nothing to await but the server's view of its sessions: look at it until the runner shows up in it.
      const deadline = Date.now() + 5_000;
      while ((await tried()) === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(await tried()).toBe(1);
      expect(await tableExists(pgMigrationConnection(observer), "busy")).toBe(false);

      // Two runners at once once it is free: one applies everything, the other nothing.
      const second = runMigrations(pgMigrationConnection(other), dir, { lockPollMs: 20 });
      await observer.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK_KEY]);
      const reports = await Promise.all([first, second]);
      expect(reports.map((r) => r.applied.length).sort()).toEqual([0, 2]);
      expect(await recorded(connection)).toEqual(["0000_table", "0001_column"]);
    });
  });
});
