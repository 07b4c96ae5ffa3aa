/**
 * The repeatable sources of the migration runner (src/db/repeatable.ts): `drizzle/functions/<name>.sql`, one
 * file per SQL function, applied after the versioned files, again when changed, in a declared order; and the
 * committed folder, which must define every function as the versioned files leave it.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { migrationsFolder } from "../src/db/client.ts";
import {
  MIGRATIONS_TABLE,
  type MigrationConnection,
  pgliteMigrationConnection,
  pgMigrationConnection,
  readMigrationFiles,
  runMigrations,
} from "../src/db/migrator.ts";
import { REPEATABLE_FOLDER, readRepeatableFiles } from "../src/db/repeatable.ts";
import { databaseTargets } from "./support/databases.ts";
import { writeMigrationFolder } from "./support/migration-folders.ts";

/**
 * Functions whose file in drizzle/functions/ was changed on purpose after the extraction from migrations
 * 0000–0011: the versioned files no longer hold their current definition, so only what a running release
 * relies on is compared for them (arguments and result), which a repeatable change must keep.
 */
const changedSinceExtraction = new Set<string>([
  // SET enable_sort = off: the order from the partitions' keys (0021).
  "lc_stream_page",
  // The platform's voice (0023): listing, peer, archived, system messages, suspensions, deleted_by.
  "lc_append_user_event",
  "lc_chat_list",
  "lc_delete_message",
  "lc_edit_message",
  "lc_message_json",
  "lc_open_chat",
  "lc_put_listing",
  "lc_send_messages",
  // Webhooks (0027): each records its change while lc_webhooks_on().
  "lc_block_user",
  "lc_mark_read",
  "lc_report",
  "lc_unblock_user",
]);

/**
 * Functions (by signature) that only the folder defines: added after the extraction, when functions came to
 * live in their files alone. Each is an addition, never a replacement of an overload the versioned files left.
 */
const addedSinceExtraction = new Set<string>([
  // The platform's voice (0023).
  "lc_append_user_event(bigint,text,jsonb,bigint)",
  "lc_archive_chat(bigint,bigint,boolean)",
  "lc_chat_list(bigint,integer,boolean)",
  "lc_chat_context(chats,bigint)",
  "lc_chat_listing_json(listings)",
  "lc_chat_listing_text(bigint,text,bigint,text,text,text,text)",
  "lc_chat_view(chats,bigint)",
  "lc_edit_message(bigint,bigint,text,text[],boolean)",
  "lc_listing_fanout_step(integer)",
  "lc_open_chat(bigint,bigint,bigint,boolean,boolean,boolean)",
  "lc_peer_text(bigint,text,text)",
  "lc_platform_delete_message(bigint,text)",
  "lc_post_system_message(bigint,text,jsonb,text)",
  "lc_request_listing_fanout(bigint)",
  "lc_send_messages(jsonb,boolean)",
  "lc_suspended(bigint)",
  // Webhooks (0027).
  "lc_notify_unread(integer,integer)",
  "lc_webhook_chat_json(chats)",
  "lc_webhook_message_data(messages)",
  "lc_webhooks_on()",
  // Photos (0029): the trigger that releases a deleted message's photos.
  "lc_release_message_photos()",
  // A person's data (0030): erasure.
  "lc_request_erasure(bigint)",
  "lc_erased(bigint)",
  "lc_erasure_step(bigint,integer,integer)",
  // A person's data (0030): MESSAGE_RETENTION_DAYS.
  "lc_retention_step(timestamp with time zone,bigint,integer)",
  "lc_retention_events_step(timestamp with time zone,bigint,integer)",
  "lc_retention_streams_step(bigint,bigint,integer,integer)",
]);

const plpgsqlReturning = (name: string, value: number) =>
  `CREATE OR REPLACE FUNCTION ${name}() RETURNS integer LANGUAGE plpgsql AS $$ BEGIN RETURN ${value}; END $$;`;

describe.each(databaseTargets())("repeatable migrations (functions/) on $name", (target) => {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  function tempDir(): string {
    const dir = mkdtempSync(join(tmpdir(), "lc-repeatable-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  /** A fresh empty database of this target and a session on it. */
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

  const resultOf = async (connection: MigrationConnection, fn: string) =>
    (await connection.rows<{ v: number }>(`select ${fn}() as v`))[0]?.v;

  it("applies each function file after the versioned files, skips an unchanged one, applies a changed one again, never drops", async () => {
    const connection = await emptyDatabase();
    const versioned: Array<[string, string]> = [["0000_table", "create table things (id int);"]];
    // The function reads a table that only the versioned file creates: it must come after it.
    const counts = `CREATE OR REPLACE FUNCTION thing_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM things $$;`;
    const dir = writeMigrationFolder(tempDir(), versioned, {
      thing_count: counts,
      answer: plpgsqlReturning("answer", 1),
    });

    const first = await runMigrations(connection, dir);
    expect(first.applied.map((a) => a.name)).toEqual(["0000_table"]);
    expect(first.repeatable.map((a) => a.name)).toEqual(["functions/answer", "functions/thing_count"]);
    const rows = await connection.rows<{ name: string; kind: string }>(
      `select name, kind from ${MIGRATIONS_TABLE} order by name`,
    );
    expect(rows).toEqual([
      { name: "0000_table", kind: "versioned" },
      { name: "functions/answer", kind: "repeatable" },
      { name: "functions/thing_count", kind: "repeatable" },
    ]);

    // Unchanged: nothing runs (line endings alone are no change).
    writeMigrationFolder(dir, versioned, {
      thing_count: counts.replace(/\n/g, "\r\n"),
      answer: plpgsqlReturning("answer", 1),
    });
    expect((await runMigrations(connection, dir)).repeatable).toEqual([]);

    // Changed: applied again, and recorded with its new checksum.
    writeMigrationFolder(dir, versioned, { thing_count: counts, answer: plpgsqlReturning("answer", 2) });
    const [before] = await connection.rows<{ checksum: string }>(
      `select checksum from ${MIGRATIONS_TABLE} where name = 'functions/answer'`,
    );
    expect((await runMigrations(connection, dir)).repeatable.map((a) => a.name)).toEqual(["functions/answer"]);
    expect(await resultOf(connection, "answer")).toBe(2);
    const [after] = await connection.rows<{ checksum: string }>(
      `select checksum from ${MIGRATIONS_TABLE} where name = 'functions/answer'`,
    );
    expect(after?.checksum).not.toBe(before?.checksum);

    // Removed: start-up goes on, and the function stays (the running release may call it: a contract step drops it).
    writeMigrationFolder(dir, versioned, { thing_count: counts });
    await expect(runMigrations(connection, dir)).resolves.toMatchObject({ applied: [], repeatable: [] });
    expect(await resultOf(connection, "answer")).toBe(2);
  });

  it("applies a file after the files it names in `-- migrate: after`, and refuses cycles and unknown names", async () => {
    // `a_total` sorts first but its LANGUAGE sql body calls `z_base`, which PostgreSQL checks at creation.
    const base = plpgsqlReturning("z_base", 40);
    const total = "CREATE OR REPLACE FUNCTION a_total() RETURNS integer LANGUAGE sql AS $$ SELECT z_base() + 2 $$;";

    const unordered = await emptyDatabase();
    const plain = writeMigrationFolder(tempDir(), [], { a_total: total, z_base: base });
    await expect(runMigrations(unordered, plain)).rejects.toThrow(
      /migration functions\/a_total\.sql failed: function z_base\(\) does not exist/,
    );

    const ordered = await emptyDatabase();
    const dir = writeMigrationFolder(tempDir(), [], { a_total: `-- migrate: after z_base\n${total}`, z_base: base });
    expect(readRepeatableFiles(dir).map((f) => f.name)).toEqual(["functions/z_base", "functions/a_total"]);
    const report = await runMigrations(ordered, dir);
    expect(report.repeatable.map((a) => a.name)).toEqual(["functions/z_base", "functions/a_total"]);
    expect(await resultOf(ordered, "a_total")).toBe(42);

    writeMigrationFolder(dir, [], {
      a_total: `-- migrate: after z_base\n${total}`,
      z_base: `-- migrate: after a_total\n${base}`,
    });
    expect(() => readRepeatableFiles(dir)).toThrow(/form a cycle/);
    writeMigrationFolder(dir, [], { a_total: `-- migrate: after z_bsae\n${total}`, z_base: base });
    expect(() => readRepeatableFiles(dir)).toThrow(
      /says "-- migrate: after z_bsae", but there is no functions\/z_bsae\.sql/,
    );
  });

  it("adds its columns to the migrations table of an earlier release, keeping its rows", async () => {
    const connection = await emptyDatabase();
    const files: Array<[string, string]> = [["0000_table", "create table things (id int);"]];
    const dir = writeMigrationFolder(tempDir(), files, { answer: plpgsqlReturning("answer", 1) });
    // The table as the release before this one made it, with the file it applied.
    await connection.run(`create schema lc_migrations;
      create table ${MIGRATIONS_TABLE} (name text primary key, checksum text not null,
        applied_at timestamptz not null default now(), ms integer);
      create table things (id int)`);
    const [file] = readMigrationFiles(dir);
    await connection.rows(`insert into ${MIGRATIONS_TABLE} (name, checksum, ms) values ($1, $2, 1)`, [
      file!.name,
      file!.checksum,
    ]);

    const report = await runMigrations(connection, dir);
    expect(report.applied).toEqual([]);
    expect(report.repeatable.map((a) => a.name)).toEqual(["functions/answer"]);
    const rows = await connection.rows<{ name: string; kind: string; contract: boolean }>(
      `select name, kind, contract from ${MIGRATIONS_TABLE} order by name`,
    );
    expect(rows).toEqual([
      { name: "0000_table", kind: "versioned", contract: false },
      { name: "functions/answer", kind: "repeatable", contract: false },
    ]);
  });

  it("defines every function of the committed migrations exactly as the versioned files leave it", {
    timeout: 120_000,
  }, async () => {
    // The committed folder without its functions/: what the versioned files alone leave in the database.
    const versionedOnly = tempDir();
    cpSync(migrationsFolder, versionedOnly, { recursive: true });
    rmSync(join(versionedOnly, REPEATABLE_FOLDER), { recursive: true, force: true });
    const withoutFolder = await emptyDatabase();
    expect((await runMigrations(withoutFolder, versionedOnly)).repeatable).toEqual([]);

    const withFolder = await emptyDatabase();
    const report = await runMigrations(withFolder, migrationsFolder);
    expect(report.repeatable.length).toBe(readRepeatableFiles(migrationsFolder).length);

    const definitions = async (connection: MigrationConnection) =>
      connection.rows<{ signature: string; name: string; result: string; definition: string }>(
        `select p.oid::regprocedure::text as signature, p.proname::text as name,
              pg_get_function_result(p.oid) as result, pg_get_functiondef(p.oid) as definition
            from pg_proc p join pg_namespace n on n.oid = p.pronamespace
            where n.nspname = 'public' order by 1`,
      );
    const expected = await definitions(withoutFolder);
    const all = await definitions(withFolder);
    // The same functions, overloads included: none missing from the folder, and none it adds but those listed.
    expect(all.filter((f) => addedSinceExtraction.has(f.signature)).map((f) => f.signature)).toEqual(
      [...addedSinceExtraction].sort(),
    );
    const actual = all.filter((f) => !addedSinceExtraction.has(f.signature));
    expect(actual.map((f) => f.signature)).toEqual(expected.map((f) => f.signature));
    expect(expected.length).toBeGreaterThanOrEqual(23);
    for (const [index, want] of expected.entries()) {
      const got = actual[index]!;
      if (changedSinceExtraction.has(want.name)) expect(got.result, want.signature).toBe(want.result);
      else expect(got.definition, want.signature).toBe(want.definition);
    }
    // One file per function name, and every file names a function of the database.
    const names = new Set(all.map((f) => f.name));
    expect(
      readRepeatableFiles(migrationsFolder)
        .map((f) => f.name.slice(REPEATABLE_FOLDER.length + 1))
        .sort(),
    ).toEqual([...names].sort());
  });

  it("keeps a file's statements apart: two overloads in one file, one transaction", async () => {
    const connection = await emptyDatabase();
    const dir = tempDir();
    const overloads =
      "CREATE OR REPLACE FUNCTION twice(a integer) RETURNS integer LANGUAGE sql AS $$ SELECT a * 2 $$;\n" +
      "--> statement-breakpoint\n" +
      "CREATE OR REPLACE FUNCTION twice(a text) RETURNS text LANGUAGE sql AS $$ SELECT a || a $$;\n" +
      "--> statement-breakpoint\n" +
      "SELECT 1 / 0;";
    writeMigrationFolder(dir, [], { twice: overloads });
    await expect(runMigrations(connection, dir)).rejects.toThrow(
      /migration functions\/twice\.sql failed: division by zero/,
    );
    // Rolled back whole: neither overload, and not recorded.
    const [found] = await connection.rows<{ n: number }>(
      "select count(*)::int as n from pg_proc where proname = 'twice'",
    );
    expect(found?.n).toBe(0);
    writeFileSync(join(dir, REPEATABLE_FOLDER, "twice.sql"), overloads.replace("SELECT 1 / 0;", ""));
    await runMigrations(connection, dir);
    const [both] = await connection.rows<{ i: number; t: string }>("select twice(21) as i, twice('ab'::text) as t");
    expect(both).toEqual({ i: 42, t: "abab" });
  });
});
