/**
 * The photo sweeper when its storage is down: every sweep fails (one a second after each delete), and the log says
 * so once, not once a sweep; the first sweep that succeeds again says so too, and removes what was due. On PGlite
 * and, with DATABASE_URL, PostgreSQL.
 */

import { Writable } from "node:stream";
import { sql } from "drizzle-orm";
import pino from "pino";
import { describe, expect, it } from "vitest";
import { rowsOf } from "../src/events/log.ts";
import type { Storage } from "../src/media/storage.ts";
import { createPhotoSweeper } from "../src/media/sweeper.ts";
import { databaseTargets, suiteDatabase } from "./support/databases.ts";

/** A storage whose removals fail while `down`, and that records the keys it removed otherwise. */
function switchableStorage() {
  const removed: string[] = [];
  const state = { down: true };
  const unused = () => {
    throw new Error("the sweeper only removes");
  };
  const storage: Storage = {
    kind: "s3",
    presignPut: unused,
    presignGet: unused,
    sizeOf: unused,
    read: unused,
    write: unused,
    list: unused,
    close: () => {},
    async remove(keys) {
      if (state.down) throw new Error("connect ECONNREFUSED 127.0.0.1:9000");
      removed.push(...keys);
    },
  };
  return { storage, removed, state };
}

/** A pino logger whose lines (level and message) are kept in memory. */
function memoryLog() {
  const lines: { level: number; msg: string }[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { log: pino({ level: "debug" }, sink), lines };
}

describe.each(databaseTargets())("photo sweeper with its storage down: $name", (target) => {
  const database = suiteDatabase(target);

  it("warns once for a run of failed sweeps, says when they succeed again, and then removes what was due", async () => {
    const { db } = database();
    await db.execute(sql`
      INSERT INTO uploads (id, user_id, content_type, declared_size, created_at, sweep_after)
      SELECT 'sweep-' || i, 7, 'image/jpeg', 100, now() - interval '2 days', now() - interval '1 second'
      FROM generate_series(1, 3) AS i`);
    const { storage, removed, state } = switchableStorage();
    const { log, lines } = memoryLog();
    const sweeper = createPhotoSweeper({ db, storage, log, putWindowS: 1_200, intervalMs: 3_600_000 });

    for (let i = 0; i < 5; i += 1) {
      // Each failed sweep leaves its rows claimed (10 minutes); made due again, as they would be by then.
      await expect(sweeper.sweepNow()).rejects.toThrow(/ECONNREFUSED/);
      await db.execute(sql`UPDATE uploads SET sweep_after = now() - interval '1 second' WHERE user_id = 7`);
    }
    const warnings = lines.filter((line) => line.level === 40);
    expect(warnings.map((line) => line.msg)).toEqual([
      "could not remove due photos from the storage: sweeps go on, and a line says when they succeed again",
    ]);
    expect(lines.filter((line) => line.msg === "a photo sweep failed again")).toHaveLength(4);

    state.down = false;
    expect(await sweeper.sweepNow()).toBe(3);
    expect(lines.filter((line) => line.msg === "photo sweeps succeed again")).toEqual([
      expect.objectContaining({ level: 30, failed_sweeps: 5 }),
    ]);
    expect(removed).toHaveLength(9);
    const left = rowsOf<{ n: string | number }>(
      await db.execute(sql`SELECT count(*) AS n FROM uploads WHERE user_id = 7`),
    );
    expect(Number(left[0]?.n)).toBe(0);

    // A later failure warns again: it begins a new run.
    state.down = true;
    await db.execute(sql`
      INSERT INTO uploads (id, user_id, content_type, declared_size, created_at, sweep_after)
      VALUES ('sweep-later', 7, 'image/jpeg', 100, now() - interval '2 days', now() - interval '1 second')`);
    await expect(sweeper.sweepNow()).rejects.toThrow(/ECONNREFUSED/);
    expect(lines.filter((line) => line.level === 40)).toHaveLength(2);
    await sweeper.stop();
  });
});
