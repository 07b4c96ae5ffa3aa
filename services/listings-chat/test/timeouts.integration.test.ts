/**
 * Nothing waits forever on PostgreSQL: every session of the pool carries a statement, lock and
 * idle-in-transaction timeout, so a transaction left open by a frozen or partitioned instance holds its
 * locks for at most that long, not until TCP keepalive gives up two hours later.
 */
import { randomUUID } from "node:crypto";
import { eq, sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createChatService } from "../src/chats/service.ts";
import { type DatabaseHandle, defaultReadPool, openDatabase } from "../src/db/client.ts";
import { userStreams } from "../src/db/schema.ts";
import { createRateLimiter } from "../src/limits/rate-limiter.ts";
import { createMessageService } from "../src/messages/service.ts";
import { databaseTargets } from "./support/databases.ts";

const postgres = databaseTargets().find((t) => t.name === "postgres");

describe.runIf(postgres)("PostgreSQL timeouts on every session", () => {
  let frozen: DatabaseHandle;
  let healthy: DatabaseHandle;
  let drop: () => Promise<void> = async () => {};

  beforeAll(async () => {
    const created = await postgres!.create();
    drop = created.drop;
    if (!("url" in created.options)) throw new Error("the PostgreSQL target has a URL");
    // Two "instances" on one database; the first has short limits so that the test is quick.
    frozen = await openDatabase({
      ...created.options,
      timeouts: { statementMs: 1_234, lockMs: 567, idleInTransactionMs: 500 },
    });
    healthy = await openDatabase(created.options);
  });

  afterAll(async () => {
    await frozen?.close();
    await healthy?.close();
    await drop();
  });

  it("sets them on the sessions of the pool (and the defaults when none are given)", async () => {
    const show = async (handle: DatabaseHandle, name: string) =>
      ((await handle.db.execute(sql.raw(`show ${name}`))) as unknown as { rows: Array<Record<string, string>> })
        .rows[0]?.[name];
    expect(await show(frozen, "statement_timeout")).toBe("1234ms");
    expect(await show(frozen, "lock_timeout")).toBe("567ms");
    expect(await show(frozen, "idle_in_transaction_session_timeout")).toBe("500ms");
    expect(await show(healthy, "statement_timeout")).toBe("10s");
    expect(await show(healthy, "lock_timeout")).toBe("5s");
    expect(await show(healthy, "idle_in_transaction_session_timeout")).toBe("10s");
    // The pool of page reads has a shorter statement timeout of its own.
    const showRead = async (name: string) =>
      ((await healthy.reads.execute(sql.raw(`show ${name}`))) as unknown as { rows: Array<Record<string, string>> })
        .rows[0]?.[name];
    expect(await showRead("statement_timeout")).toBe("5s");
    expect(await showRead("lock_timeout")).toBe("5s");
  });

  it("keeps sends going while page reads hold every connection of their own pool", async () => {
    const chats = createChatService({ db: healthy.db, reads: healthy.reads, publish: () => {} });
    const messages = createMessageService({
      db: healthy.db,
      reads: healthy.reads,
      publish: () => {},
      limits: createRateLimiter({ limits: { send: 1_000 } }),
    });
    const { chat } = await chats.open(9_201, 77, 9_202);
    // Twice the read pool's connections, each busy for 1.5 s: reads queue behind them.
    // (then() starts them: drizzle's queries run only once they are awaited.)
    const slowReads = Array.from({ length: 2 * defaultReadPool.size }, () =>
      healthy.reads.execute(sql`select pg_sleep(1.5)`).then(() => undefined),
    );
    await new Promise((r) => setTimeout(r, 100));
    const started = Date.now();
    const { message } = await messages.send(9_201, chat.id, "not behind the reads", null);
    expect(message.content).toBe("not behind the reads");
    expect(Date.now() - started).toBeLessThan(500);
    // A page read, though, waits for its pool.
    const pageStarted = Date.now();
    await messages.page(9_202, chat.id, undefined, 10);
    expect(Date.now() - pageStarted).toBeGreaterThan(1_000);
    await Promise.all(slowReads);
  });

  it("ends a transaction that holds a user's stream while its instance is frozen; the others write again", async () => {
    const chats = createChatService({ db: healthy.db, publish: async () => {} });
    const messages = createMessageService({
      db: healthy.db,
      publish: async () => {},
      limits: createRateLimiter({ limits: { send: 1_000 } }),
    });
    const { chat } = await chats.open(9_101, 9_102, 1);

    // The frozen instance takes the row lock of the sender's stream end, then stops talking to the
    // database for 6 s.
    let lockTaken!: () => void;
    const taken = new Promise<void>((resolve) => {
      lockTaken = resolve;
    });
    const frozenTransaction = frozen.db
      .transaction(async (tx) => {
        await tx
          .update(userStreams)
          .set({ lastEventId: sql`${userStreams.lastEventId}` })
          .where(eq(userStreams.userId, 9_101));
        lockTaken();
        await new Promise((resolve) => setTimeout(resolve, 6_000));
        await tx.execute(sql`select 1`);
      })
      .then(
        () => "committed",
        () => "ended by the server",
      );
    await taken;
    const started = Date.now();
    await messages.send(9_101, chat.id, "not held up for long", randomUUID());
    const waited = Date.now() - started;
    // Released when the server ended the idle transaction (500 ms), far before the 6 s freeze.
    expect(waited).toBeLessThan(3_000);
    expect(await frozenTransaction).toBe("ended by the server");
    // The pool of the frozen instance recovers: its next query gets a fresh session.
    await frozen.ping();
  }, 15_000);
});
