/**
 * Expand now, contract a release later, enforced: a versioned file marked `-- migrate: contract` waits while an
 * instance of an older release is serving (src/db/instance-registry.ts), the expand files after it are applied,
 * and a later run applies it once those instances have gone. An older release starts on a database a newer
 * one expanded, not on one it contracted. Instances register on PostgreSQL; on PGlite (one process) none does.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { drizzle as drizzleNodePg } from "drizzle-orm/node-postgres";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { type DatabaseHandle, migrationsFolder } from "../src/db/client.ts";
import { INSTANCES_TABLE, OlderThanDatabaseError, registerInstance } from "../src/db/instance-registry.ts";
import {
  CONTRACT_MARK,
  MIGRATIONS_TABLE,
  type MigrationConnection,
  NO_TRANSACTION_MARK,
  pgliteMigrationConnection,
  pgMigrationConnection,
  readMigrationFiles,
  runMigrations,
} from "../src/db/migrator.ts";
import { databaseTargets } from "./support/databases.ts";
import { startTestChat } from "./support/harness.ts";
import { writeMigrationFolder } from "./support/migration-folders.ts";

/** Release N: a table and an expand step (a new column the release writes besides the old one). */
const releaseN: Array<[string, string]> = [
  ["0000_items", "create table items (id int, old_note text);"],
  ["0001_expand_note", "alter table items add column note text;"],
];

/** Release N+1: drops what release N still writes (a contract file), then a further expand step. */
const releaseNext: Array<[string, string]> = [
  ...releaseN,
  [
    "0002_contract_old_note",
    `${CONTRACT_MARK}\n-- Release N wrote old_note; N+1 writes only note.\nalter table items drop column old_note;`,
  ],
  ["0003_expand_tags", "create table item_tags (item_id int, tag text);"],
];

const answer = (value: number) =>
  `CREATE OR REPLACE FUNCTION answer() RETURNS integer LANGUAGE plpgsql AS $$ BEGIN RETURN ${value}; END $$;`;

describe.each(databaseTargets())("contract migrations on $name", (target) => {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  function folder(files: Array<[string, string]>, functions?: Record<string, string>): string {
    const dir = mkdtempSync(join(tmpdir(), "lc-contract-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    return writeMigrationFolder(dir, files, functions);
  }

  async function emptyDatabase(): Promise<MigrationConnection> {
    if (target.name === "pglite") {
      const client = new PGlite();
      cleanups.push(() => client.close());
      return pgliteMigrationConnection(client);
    }
    const created = await target.create();
    cleanups.push(created.drop);
    if (!("url" in created.options)) throw new Error("the PostgreSQL target has a URL");
    const client = new pg.Client({ connectionString: created.options.url });
    client.on("error", () => {});
    await client.connect();
    cleanups.push(() => client.end().catch(() => {}));
    return pgMigrationConnection(client);
  }

  /** A row as an instance built with the first `migrations` files writes it (an instance of release N: 2). */
  const registerFake = (connection: MigrationConnection, id: string, migrations: number, newest: string) =>
    connection.rows(`insert into ${INSTANCES_TABLE} (instance_id, newest_migration, migrations) values ($1, $2, $3)`, [
      id,
      newest,
      migrations,
    ]);

  const columnsOfItems = async (connection: MigrationConnection) =>
    (
      await connection.rows<{ name: string }>(
        "select column_name::text as name from information_schema.columns where table_name = 'items' order by 1",
      )
    ).map((c) => c.name);

  const recorded = async (connection: MigrationConnection) =>
    (await connection.rows<{ name: string }>(`select name from ${MIGRATIONS_TABLE} order by name`)).map((r) => r.name);

  it("reads the mark among a file's top comment lines, beside no-transaction", () => {
    const dir = folder([
      ...releaseNext,
      ["0004_drop_index", `${NO_TRANSACTION_MARK}\n${CONTRACT_MARK}\ndrop index concurrently if exists items_old_idx;`],
      ["0005_not_a_mark", `create table later (id int);\n${CONTRACT_MARK}`],
    ]);
    expect(readMigrationFiles(dir).map((f) => [f.name, f.contract, f.noTransaction])).toEqual([
      ["0000_items", false, false],
      ["0001_expand_note", false, false],
      ["0002_contract_old_note", true, false],
      ["0003_expand_tags", false, false],
      ["0004_drop_index", true, true],
      ["0005_not_a_mark", false, false],
    ]);
  });

  it("holds a contract file back while an older instance is live, applies the files after it, then applies it once that instance is stale", async () => {
    const connection = await emptyDatabase();
    await runMigrations(connection, folder(releaseN));
    await registerFake(connection, "pod-of-release-n", 2, "0001_expand_note");
    // An instance of the new release does not hold anything back.
    await registerFake(connection, "pod-of-release-n-plus-1", 4, "0003_expand_tags");

    const next = folder(releaseNext);
    const report = await runMigrations(connection, next);
    expect(report.applied.map((a) => a.name)).toEqual(["0003_expand_tags"]);
    expect(report.heldBack).toEqual([
      {
        name: "0002_contract_old_note",
        reason: expect.stringMatching(
          /^contract migration number 3 waits for 1 instance\(s\) of an older release: pod-of-release-n \(built with 2 migrations, newest 0001_expand_note, seen \d+ s ago\)/,
        ),
        instances: [expect.objectContaining({ instanceId: "pod-of-release-n", migrations: 2 })],
      },
    ]);
    expect(await columnsOfItems(connection)).toEqual(["id", "note", "old_note"]);
    expect(await recorded(connection)).toEqual(["0000_items", "0001_expand_note", "0003_expand_tags"]);

    // Still there on the next run (an instance starting, or the next release's migration).
    await expect(runMigrations(connection, next)).resolves.toMatchObject({
      applied: [],
      heldBack: [{ name: "0002_contract_old_note" }],
    });

    // The old pod stopped refreshing (a crash): past the window it no longer counts.
    await connection.run(`update ${INSTANCES_TABLE} set seen_at = now() - interval '91 seconds'
      where instance_id = 'pod-of-release-n'`);
    const later = await runMigrations(connection, next);
    expect(later.applied.map((a) => a.name)).toEqual(["0002_contract_old_note"]);
    expect(later.heldBack).toEqual([]);
    expect(await columnsOfItems(connection)).toEqual(["id", "note"]);
    const [row] = await connection.rows<{ contract: boolean }>(
      `select contract from ${MIGRATIONS_TABLE} where name = '0002_contract_old_note'`,
    );
    expect(row?.contract).toBe(true);
  });

  it("applies a held-back file once the older instance's row is gone (a clean stop)", async () => {
    const connection = await emptyDatabase();
    await runMigrations(connection, folder(releaseN));
    await registerFake(connection, "pod-of-release-n", 2, "0001_expand_note");
    const next = folder(releaseNext);
    expect((await runMigrations(connection, next)).heldBack.map((h) => h.name)).toEqual(["0002_contract_old_note"]);
    await connection.run(`delete from ${INSTANCES_TABLE} where instance_id = 'pod-of-release-n'`);
    expect((await runMigrations(connection, next)).applied.map((a) => a.name)).toEqual(["0002_contract_old_note"]);
  });

  it("keeps the checksum rules for a held-back file and for the files applied after it", async () => {
    const connection = await emptyDatabase();
    await runMigrations(connection, folder(releaseN));
    await registerFake(connection, "pod-of-release-n", 2, "0001_expand_note");
    const dir = folder(releaseNext);
    expect((await runMigrations(connection, dir)).heldBack.map((h) => h.name)).toEqual(["0002_contract_old_note"]);

    // A file applied after the held-back one is checked as any applied file.
    const edited = releaseNext.map(([tag, sql]): [string, string] =>
      tag === "0003_expand_tags" ? [tag, sql.replace("tag text", "tag varchar")] : [tag, sql],
    );
    writeMigrationFolder(dir, edited);
    await expect(runMigrations(connection, dir)).rejects.toThrow(
      /migration 0003_expand_tags\.sql changed after it was applied/,
    );

    // Once applied, the contract file is recorded with its checksum like the others.
    writeMigrationFolder(dir, releaseNext);
    await connection.run(`delete from ${INSTANCES_TABLE}`);
    await runMigrations(connection, dir);
    const contractEdited = releaseNext.map(([tag, sql]): [string, string] =>
      tag === "0002_contract_old_note" ? [tag, `${sql}\nalter table items drop column note;`] : [tag, sql],
    );
    writeMigrationFolder(dir, contractEdited);
    await expect(runMigrations(connection, dir)).rejects.toThrow(
      /migration 0002_contract_old_note\.sql changed after it was applied/,
    );
  });

  it("lets an older release start on a database a newer one expanded (its functions left as they are), not on one it contracted", async () => {
    const connection = await emptyDatabase();
    const n = folder(releaseN, { answer: answer(1) });
    const next = folder(releaseNext, { answer: answer(2) });
    await runMigrations(connection, n);
    await registerFake(connection, "pod-of-release-n", 2, "0001_expand_note");
    await runMigrations(connection, next);

    // A pod of release N restarts during the rollout: the expand file 0003 is not its own, and is fine.
    const restart = await runMigrations(connection, n);
    expect(restart).toMatchObject({ applied: [], repeatable: [], ahead: ["0003_expand_tags"] });
    const [value] = await connection.rows<{ v: number }>("select answer() as v");
    expect(value?.v).toBe(2);

    await connection.run(`delete from ${INSTANCES_TABLE}`);
    await runMigrations(connection, next);
    await expect(runMigrations(connection, n)).rejects.toThrow(
      /this release is older than the database: contract migration 0002_contract_old_note\.sql was applied/,
    );
  });

  it("holds back a no-transaction contract file as well", async () => {
    const connection = await emptyDatabase();
    const files: Array<[string, string]> = [
      [
        "0000_items",
        "create table items (id int);\n--> statement-breakpoint\ncreate index items_id_idx on items (id);",
      ],
      ["0001_drop_index", `${NO_TRANSACTION_MARK}\n${CONTRACT_MARK}\ndrop index concurrently if exists items_id_idx;`],
    ];
    await runMigrations(connection, folder(files.slice(0, 1)));
    await registerFake(connection, "pod-of-release-n", 1, "0000_items");
    const dir = folder(files);
    expect((await runMigrations(connection, dir)).heldBack.map((h) => h.name)).toEqual(["0001_drop_index"]);
    await connection.run(`delete from ${INSTANCES_TABLE}`);
    expect((await runMigrations(connection, dir)).applied.map((a) => a.name)).toEqual(["0001_drop_index"]);
    const [index] = await connection.rows<{ found: boolean }>(
      "select to_regclass('items_id_idx') is not null as found",
    );
    expect(index?.found).toBe(false);
  });

  it(`a chat instance ${target.name === "postgres" ? "registers while it serves and deletes its row at a clean stop" : "registers nothing (one process)"}`, async () => {
    const created = await target.create();
    cleanups.push(created.drop);
    const chat = await startTestChat({ database: created.options, instanceId: "instance-under-test" });
    let stopped = false;
    cleanups.push(() => (stopped ? undefined : chat.stop()));
    const rows = async () =>
      (
        (await chat.server.database.db.execute(
          `select instance_id, newest_migration, migrations from ${INSTANCES_TABLE}`,
        )) as unknown as { rows: Array<{ instance_id: string; newest_migration: string; migrations: number }> }
      ).rows;
    const known = readMigrationFiles(migrationsFolder).map((f) => f.name);
    expect(chat.server.database.migrations.known).toEqual(known);
    if (target.name === "pglite") {
      expect(await rows()).toEqual([]);
      return;
    }
    expect(await rows()).toEqual([
      { instance_id: "instance-under-test", newest_migration: known.at(-1), migrations: known.length },
    ]);
    const url = "url" in created.options ? created.options.url : "";
    await chat.stop();
    stopped = true;
    const observer = new pg.Client({ connectionString: url });
    await observer.connect();
    try {
      expect((await observer.query(`select count(*)::int as n from ${INSTANCES_TABLE}`)).rows[0].n).toBe(0);
    } finally {
      await observer.end();
    }
  });

  describe.runIf(target.name === "postgres")("registration (PostgreSQL)", () => {
    async function connect(url: string): Promise<pg.Client> {
      const client = new pg.Client({ connectionString: url });
      client.on("error", () => {});
      await client.connect();
      cleanups.push(() => client.end().catch(() => {}));
      return client;
    }

    it("makes an instance that registers while a contract file runs wait for it, then refuse to start", async () => {
      const created = await target.create();
      cleanups.push(created.drop);
      if (!("url" in created.options)) throw new Error("the PostgreSQL target has a URL");
      const url = created.options.url;
      const runner = pgMigrationConnection(await connect(url));
      const holder = await connect(url);
      const observer = await connect(url);
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      cleanups.push(() => pool.end());
      const database = { kind: "postgres", db: drizzleNodePg(pool) } as unknown as DatabaseHandle;
      await runMigrations(runner, folder(releaseN));

      const waitersOn = async (relation: string) =>
        (
          await observer.query<{ n: number }>(
            "select count(*)::int as n from pg_locks where not granted and relation = to_regclass($1)",
            [relation],
          )
        ).rows[0]!.n;
      // Nothing to await but the server's lock table: look at it until the session shows up in it.
      const waitForWaiter = async (relation: string) => {
        const deadline = Date.now() + 5_000;
        while ((await waitersOn(relation)) === 0 && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        expect(await waitersOn(relation)).toBe(1);
      };

      // A reader of `items` keeps the contract file's ALTER waiting, inside its transaction.
      await holder.query("begin");
      await holder.query("lock table items in access share mode");
      const migrating = runMigrations(runner, folder(releaseNext), { lockTimeoutMs: 10_000, attempts: 1 });
      await waitForWaiter("items");
      // An instance of release N starts now: the runner saw no such instance, so its row must wait.
      // Its refusal is taken as it comes (it may come before the runner's promise is awaited below): a rejection
      // nothing handled yet would be reported as unhandled.
      const registering = registerInstance(database, {
        instanceId: "pod-of-release-n",
        known: releaseN.map(([tag]) => tag),
      }).then(
        () => new Error("the instance of release N registered"),
        (error: unknown) => error,
      );
      await waitForWaiter(INSTANCES_TABLE);
      await holder.query("commit");

      await expect(migrating).resolves.toMatchObject({
        applied: [{ name: "0002_contract_old_note" }, { name: "0003_expand_tags" }],
        heldBack: [],
      });
      expect(String(await registering)).toMatch(
        /OlderThanDatabaseError: .*contract migration 0002_contract_old_note\.sql was applied/,
      );
    });

    it("keeps its row fresh, and refuses to start once a contract file it does not know was applied", async () => {
      const created = await target.create();
      cleanups.push(created.drop);
      const chat = await startTestChat({ database: created.options });
      cleanups.push(() => chat.stop());
      const { database } = chat.server;
      const seenAt = async (id: string) =>
        (
          (await database.db.execute(
            `select seen_at::text as at from ${INSTANCES_TABLE} where instance_id = '${id}'`,
          )) as unknown as { rows: Array<{ at: string }> }
        ).rows[0]?.at;

      const known = database.migrations.known;
      const registration = await registerInstance(database, { instanceId: "refreshing", known, refreshMs: 20 });
      const first = await seenAt("refreshing");
      // Nothing to await but the row itself: look at it until a refresh has moved it.
      const deadline = Date.now() + 5_000;
      while ((await seenAt("refreshing")) === first && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(await seenAt("refreshing")).not.toBe(first);
      await registration.stop();
      expect(await seenAt("refreshing")).toBeUndefined();

      // A newer release applied a contract file: an instance built without it must not serve.
      await database.db.execute(
        `insert into ${MIGRATIONS_TABLE} (name, checksum, kind, contract) values ('9999_contract_later', 'x', 'versioned', true)`,
      );
      await expect(registerInstance(database, { instanceId: "too-old", known })).rejects.toThrow(
        OlderThanDatabaseError,
      );
      await expect(registerInstance(database, { instanceId: "too-old", known })).rejects.toThrow(
        /contract migration 9999_contract_later\.sql was applied/,
      );
      expect(await seenAt("too-old")).toBeUndefined();
      // Built with it, an instance starts.
      const newer = await registerInstance(database, { instanceId: "newer", known: [...known, "9999_contract_later"] });
      await newer.stop();
    });
  });
});
