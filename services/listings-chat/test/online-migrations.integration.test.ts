/**
 * PostgreSQL only: the migrations written after the last release (0011) applied online. A database is brought
 * to 0011 with the real runner (a copy of drizzle/ whose journal ends there), seeded with the review's skewed
 * seed, and then the real folder is applied by the real runner while a probe sends, marks read and reads pages
 * with the service's 5 s lock timeout. No file may hold an AccessExclusiveLock that other sessions could queue
 * behind for more than 1 s, and the probe must see no error. Whatever files exist after 0011 are applied: the
 * test covers each new one as it is added.
 */
import { rmSync } from "node:fs";
import { Limits } from "@listings-chat/shared";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrationsFolder } from "../src/db/client.ts";
import { databaseTargets } from "./support/databases.ts";
import type { LockHold } from "./support/lock-monitor.ts";
import { migrationsFolderCopy } from "./support/migration-folders.ts";
import { migrate, migrateWatched, visibleHoldsOver, type WatchedMigration } from "./support/migration-watch.ts";
import { reviewSkewedSeed, type SkewedSeed, seedSkewed } from "./support/skewed-seed.ts";
import type { ProbeChat } from "./support/traffic-probe.ts";

const postgres = databaseTargets().find((target) => target.name === "postgres");

/** The newest migration of the release in production: what the files after it are applied to. */
const LAST_RELEASED = "0011_send_counts_once";
/** The runner's lock time-out (2 s) and a little: what one call of the traffic may wait at worst. */
const MAX_PROBE_MS = 2_500;
/** The longest an AccessExclusiveLock may be held: the service's requests queue behind it meanwhile. */
const MAX_HOLD_MS = 1_000;

/**
 * A message page as the release in production reads it, by the columns it knows: the traffic beside a migration
 * is the running release's (this release's pods serve only once it is done), and this one's reads name columns
 * the files under test are adding (`kind`, `data`, … of 0023).
 */
const pageAsReleased = (client: pg.Client, chatId: number) =>
  client.query(
    `select id, chat_id, sender_id, content, client_msg_id, created_at, edited_at, deleted_at, flags
     from messages where chat_id = $1 order by id desc limit $2`,
    [chatId, Limits.messagesPageDefault + 1],
  );

/** One line per file and the figures: what CI's log shows of a run. */
function summary(watched: WatchedMigration): string {
  const hold = (h: LockHold) => `${h.ms} ms on ${h.relation} during "${h.statement.slice(0, 70)}"`;
  const visible = watched.locks.holds.filter((h) => h.visible).slice(0, 3);
  const unseen = watched.locks.holds.find((h) => !h.visible);
  return [
    ...watched.files.map((f) => `  ${f.name}: ${f.ms} ms${f.attempts > 1 ? ` (${f.attempts} attempts)` : ""}`),
    `  longest AccessExclusiveLocks (${watched.locks.polls} polls, at most ${watched.locks.maxGapMs} ms apart):`,
    ...(visible.length > 0
      ? visible.map((h) => `    ${hold(h)}`)
      : ["    none seen on a relation others use (a hold shorter than the polls' interval may fall between two)"]),
    ...(unseen ? [`    on a relation the migration made, seen by nobody else: ${hold(unseen)}`] : []),
    `  probe: ${watched.probe.calls} calls, max ${watched.probe.maxMs} ms, p99 ${watched.probe.p99Ms} ms, ` +
      `slowest by operation ${JSON.stringify(watched.probe.maxMsByOperation)}, ${watched.probe.errors.length} errors, ${watched.probe.retried} run again after a 40001/40P01` +
      watched.probe.errors.map((e) => `\n    ${e.operation}: ${e.code ?? ""} ${e.message}`).join(""),
  ].join("\n");
}

describe.runIf(postgres)("migrations after the last release, on a seeded PostgreSQL under traffic", () => {
  let url: string;
  let drop: () => Promise<void> = async () => {};
  let seed: SkewedSeed;
  let chats: ProbeChat[];
  const folders: string[] = [];

  beforeAll(async () => {
    const created = await postgres!.create();
    drop = created.drop;
    if (!("url" in created.options)) throw new Error("the postgres target must give a URL");
    url = created.options.url;
    const released = migrationsFolderCopy(migrationsFolder, LAST_RELEASED);
    folders.push(released);
    await migrate(url, released);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      seed = await seedSkewed(client, reviewSkewedSeed);
      // The long chat and the big seller's four newest chats: the buyer sends, the seller reads.
      const { rows } = await client.query<{ id: string; buyer_id: string; seller_id: string }>(
        "select id, buyer_id, seller_id from chats where seller_id = $1 order by id desc limit 4",
        [seed.account.sellerId],
      );
      chats = [
        { chatId: seed.longChat.id, senderId: seed.longChat.buyerId, readerId: seed.longChat.sellerId },
        ...rows.map((r) => ({ chatId: Number(r.id), senderId: Number(r.buyer_id), readerId: Number(r.seller_id) })),
      ];
    } finally {
      await client.end();
    }
    console.info(`online migrations: seeded ${JSON.stringify(reviewSkewedSeed)} in ${seed.ms} ms`);
  }, 180_000);

  afterAll(async () => {
    for (const folder of folders) rmSync(folder, { recursive: true, force: true });
    await drop();
  });

  it(`applies every file after ${LAST_RELEASED} with no AccessExclusiveLock held over ${MAX_HOLD_MS} ms and no error in the traffic`, {
    timeout: 180_000,
  }, async () => {
    const watched = await migrateWatched(url, migrationsFolder, chats, { readPage: pageAsReleased });
    console.info(`online migrations after ${LAST_RELEASED}:\n${summary(watched)}`);
    expect(watched.files.length, `no migration after ${LAST_RELEASED}: nothing was tested`).toBeGreaterThan(0);
    expect(visibleHoldsOver(watched, MAX_HOLD_MS)).toEqual([]);
    expect(watched.probe.errors).toEqual([]);
    // No call of the traffic waited behind a migration's lock for longer than one lock time-out of the runner and
    // a hold (a stall the lock monitor cannot see: a lock queued for, not held).
    expect(watched.probe.maxMs).toBeLessThan(MAX_PROBE_MS);
  });

  it("self-check: a file holding chats exclusively for 1.5 s is reported, and the traffic waits for it", {
    timeout: 60_000,
  }, async () => {
    // The real files and a bad one. The real ones first, without traffic (all of them, should the test above
    // have stopped half-way), so that the watched run applies the bad one alone.
    await migrate(url, migrationsFolder);
    const folder = migrationsFolderCopy(migrationsFolder, null, [
      ["9999_hold_chats", "LOCK TABLE chats IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(1.5);"],
    ]);
    folders.push(folder);
    const watched = await migrateWatched(url, folder, chats);
    console.info(`self-check (a 1.5 s exclusive lock on chats):\n${summary(watched)}`);
    expect(watched.files.map((f) => f.name)).toEqual(["9999_hold_chats"]);
    const over = visibleHoldsOver(watched, MAX_HOLD_MS);
    expect(over.map((h) => h.relation)).toEqual(["chats"]);
    expect(over[0]!.ms).toBeLessThan(3_000);
    expect(over[0]!.statement).toContain("pg_sleep");
    // Every send and mark_read looks the chat up: the probe's slowest call waited for the lock.
    expect(watched.probe.maxMs).toBeGreaterThan(MAX_HOLD_MS);
    expect(watched.probe.errors).toEqual([]);
  });
});
