/**
 * Migrations on a database already in use. To per-user streams (0002), on events under the old global log:
 * each user's existing events get 1, 2, 3 … in their old order, and writing goes on from there. To safety
 * (0008), on chats with messages: who had written is backfilled, and presence follows from it.
 */
import { rmSync } from "node:fs";
import { sql } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { recentContactsOf, sharesPresence } from "../src/chats/repository.ts";
import { createChatService } from "../src/chats/service.ts";
import { migrationsFolder } from "../src/db/client.ts";
import { readMigrationFiles } from "../src/db/migrator.ts";
import { lastEventId, readStreamPage } from "../src/events/log.ts";
import { createRateLimiter } from "../src/limits/rate-limiter.ts";
import { createMessageService } from "../src/messages/service.ts";
import { databaseTargets, unmigratedDatabase } from "./support/databases.ts";
import { migrationsFolderCopy } from "./support/migration-folders.ts";

describe.each(databaseTargets())("migrations of a database in use on $name", (target) => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  /** An empty database of this target, and how to run a migrations folder on it. */
  const emptyDatabase = () => unmigratedDatabase(target, cleanups);

  /**
   * The first `count` migrations, in a folder removed after the suite (without the function sources: they are
   * today's, written for the schema of the last migration).
   */
  function oldMigrations(count: number): string {
    const old = migrationsFolderCopy(migrationsFolder, readMigrationFiles(migrationsFolder)[count - 1]!.name);
    cleanups.push(() => rmSync(old, { recursive: true, force: true }));
    return old;
  }

  it("numbers each user's existing events in their old order, and new events follow", async () => {
    const old = oldMigrations(2);
    const { db, migrate } = await emptyDatabase();

    // The old world: one global counter; users 1↔2 in chat A and 2↔3 in chat B, events interleaved.
    await migrate(old);
    await db.execute(sql`insert into chats (listing_id, buyer_id, seller_id) values (10, 1, 2), (11, 3, 2)`);
    await db.execute(sql`insert into chat_participants (chat_id, user_id, role)
      select id, buyer_id, 'buyer' from chats union all select id, seller_id, 'seller' from chats`);
    const chatA = 1;
    const chatB = 2;
    const oldLog: Array<[number, number]> = [
      [1, chatA],
      [2, chatB],
      [3, chatA],
      [4, chatB],
      [5, chatB],
      [6, chatA],
    ];
    for (const [id, chatId] of oldLog) {
      await db.execute(sql`insert into chat_events (id, chat_id, type, payload)
        values (${id}, ${chatId}, 'message_read', ${JSON.stringify({ chat_id: chatId, message_id: id, read_by: 1, read_at: "2026-01-01T00:00:00.000Z" })}::jsonb)`);
    }
    await db.execute(sql`update event_counter set last_event_id = 6 where id = 1`);

    await migrate(migrationsFolder);

    const messageIds = async (userId: number) =>
      (await readStreamPage(db, userId, 0, { maxEvents: 100 })).events.map((e) => [
        e.event_id,
        e.type === "message_read" ? e.message_id : 0,
      ]);
    // User 1 saw A's events (old ids 1, 3, 6); user 2 saw all six; user 3 saw B's (2, 4, 5).
    expect(await messageIds(1)).toEqual([
      [1, 1],
      [2, 3],
      [3, 6],
    ]);
    expect(await messageIds(2)).toEqual([
      [1, 1],
      [2, 2],
      [3, 3],
      [4, 4],
      [5, 5],
      [6, 6],
    ]);
    expect(await messageIds(3)).toEqual([
      [1, 2],
      [2, 4],
      [3, 5],
    ]);
    expect(await lastEventId(db, 3)).toBe(3);

    // Writing goes on from there, and the change itself gets an id after the old ones.
    const messages = createMessageService({ db, publish: () => {}, limits: createRateLimiter() });
    const { message } = await messages.send(3, chatB, "after the migration", null);
    expect((await readStreamPage(db, 3, 3, { maxEvents: 10 })).events.map((e) => e.event_id)).toEqual([4]);
    expect((await readStreamPage(db, 2, 6, { maxEvents: 10 })).events.map((e) => e.event_id)).toEqual([7]);
    const result = await db.execute(sql`select id::int as id from chat_events where message_id = ${message.id}`);
    const [row] = (result as unknown as { rows: Array<{ id: number }> }).rows;
    expect(row?.id).toBe(7);
    const created = await createChatService({ db, publish: () => {} }).open(4, 12, 1);
    expect(created.created).toBe(true);
    expect(await lastEventId(db, 1)).toBe(4);
  });

  it("0008 marks who had written in each chat: presence is shared where both had, and a reply makes it so", async () => {
    const old = oldMigrations(8);
    const { db, migrate } = await emptyDatabase();
    await migrate(old);
    // Before 0008: chat 1 where both wrote, chat 2 where only the buyer did, chat 3 where no one did.
    await db.execute(
      sql`insert into chats (listing_id, buyer_id, seller_id) values (1, 11, 21), (2, 12, 22), (3, 13, 23)`,
    );
    await db.execute(sql`insert into chat_participants (chat_id, user_id, role)
      select id, buyer_id, 'buyer' from chats union all select id, seller_id, 'seller' from chats`);
    await db.execute(sql`insert into messages (chat_id, sender_id, content) values
      (1, 11, 'hi'), (1, 21, 'hello'), (2, 12, 'anyone?')`);
    await db.execute(sql`update chats c set last_message_id = (select max(id) from messages m where m.chat_id = c.id)`);

    await migrate(migrationsFolder);

    const flags = await db.execute(sql`select id::int as id, buyer_wrote, seller_wrote from chats order by id`);
    expect((flags as unknown as { rows: unknown[] }).rows).toEqual([
      { id: 1, buyer_wrote: true, seller_wrote: true },
      { id: 2, buyer_wrote: true, seller_wrote: false },
      { id: 3, buyer_wrote: false, seller_wrote: false },
    ]);
    expect(await sharesPresence(db, 1, 11, 21)).toBe(true);
    expect(await sharesPresence(db, 2, 12, 22)).toBe(false);
    const messages = createMessageService({ db, publish: () => {}, limits: createRateLimiter() });
    expect((await messages.send(22, 2, "yes, here", null)).becameMutual).toBe(true);
    expect((await messages.send(21, 1, "still here", null)).becameMutual).toBe(false);
    expect(await sharesPresence(db, 2, 12, 22)).toBe(true);
    expect(await recentContactsOf(db, 13, 100)).toEqual([]);
    expect(await recentContactsOf(db, 22, 100)).toEqual([12]);
  });
});
