/**
 * 0023–0026 (the platform's voice) on a database already in use: migrated to 0022, filled with chats and
 * messages (some edited, some deleted) by SQL as the release before stored them, then migrated to the end.
 * Old messages read as `kind: "text"`, `data: null`, `attachments: []`, and the deleted ones as deleted by their
 * sender; chats as unarchived with no listing and unknown names; 0023's checks are validated (0025) and the
 * archived list's index (0024, built CONCURRENTLY) is valid; writing goes on. On PGlite always and on
 * PostgreSQL when DATABASE_URL is set.
 */
import { rmSync } from "node:fs";
import { sql } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { createChatService } from "../src/chats/service.ts";
import { type Database, migrationsFolder } from "../src/db/client.ts";
import { createRateLimiter } from "../src/limits/rate-limiter.ts";
import { createMessageService } from "../src/messages/service.ts";
import { databaseTargets, unmigratedDatabase } from "./support/databases.ts";
import { migrationsFolderCopy } from "./support/migration-folders.ts";

/** Raw SQL rows, the same on PGlite and node-postgres (cast bigints in SQL: drivers differ on them). */
async function rows<T>(db: Database, query: ReturnType<typeof sql>): Promise<T[]> {
  return ((await db.execute(query)) as unknown as { rows: T[] }).rows;
}

const LAST_BEFORE = "0022_drop_old_open_chat";

describe.each(databaseTargets())("0023–0025 on a database in use on $name", (target) => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  /** An empty database of this target, and how to run a migrations folder on it. */
  const emptyDatabase = () => unmigratedDatabase(target, cleanups);

  it("old messages read as text with no data and no attachments, deleted ones as deleted by their sender; checks and index valid", async () => {
    const old = migrationsFolderCopy(migrationsFolder, LAST_BEFORE);
    cleanups.push(() => rmSync(old, { recursive: true, force: true }));
    const { db, migrate } = await emptyDatabase();
    await migrate(old);
    // The release before has none of 0023's tables or columns.
    expect(
      await rows(
        db,
        sql`select column_name from information_schema.columns
        where table_name = 'messages' and column_name in ('kind', 'data', 'deleted_by')`,
      ),
    ).toEqual([]);

    // Two chats: (buyer 11, seller 21) with three messages, one edited and one deleted; (12, 21) with two, one
    // deleted. Stored as the release before stored them (no kind, no deleted_by).
    await db.execute(sql`insert into chats (listing_id, buyer_id, seller_id) values (100, 11, 21), (101, 12, 21)`);
    await db.execute(sql`insert into chat_participants (chat_id, user_id, role)
      select id, buyer_id, 'buyer' from chats union all select id, seller_id, 'seller' from chats`);
    await db.execute(sql`insert into messages (chat_id, sender_id, content, client_msg_id, edited_at, deleted_at) values
      (1, 11, 'is the bike still for sale?', 'old-1', null, null),
      (1, 21, 'yes, 450 EUR', 'old-2', now(), null),
      (1, 11, '', 'old-3', null, now()),
      (2, 12, 'hello', null, null, null),
      (2, 21, '', null, null, now())`);
    await db.execute(sql`update chats c set last_message_id = (select max(id) from messages m where m.chat_id = c.id),
      buyer_wrote = true, seller_wrote = true`);
    // Listing 100 registered by the release before (issue 22): 0026 fills what chats show of it.
    await db.execute(sql`insert into listings (id, seller_id, title, price_minor, currency, image_url, url, status)
      values (100, 21, 'Road bike', 45000, 'EUR', null, 'https://marketplace.example/listings/100', 'reserved')`);

    await migrate(migrationsFolder);

    const messages = createMessageService({ db, publish: () => {}, limits: createRateLimiter() });
    const page = await messages.page(11, 1, undefined, 20);
    expect(
      page.messages.map((m) => [m.id, m.sender_id, m.kind, m.content, m.data, m.attachments, m.deleted_by]),
    ).toEqual([
      [3, 11, "text", "", null, [], "sender"],
      [2, 21, "text", "yes, 450 EUR", null, [], null],
      [1, 11, "text", "is the bike still for sale?", null, [], null],
    ]);
    expect(page.messages[1]?.edited_at).not.toBeNull();
    const other = await messages.page(21, 2, undefined, 20);
    expect(other.messages.map((m) => [m.id, m.kind, m.deleted_at === null, m.deleted_by])).toEqual([
      [5, "text", false, "sender"],
      [4, "text", true, null],
    ]);

    // Old chats: not archived, names unknown; the listing registered before shown (0026 filled its chat_json),
    // the other unregistered.
    const bike = {
      id: 100,
      title: "Road bike",
      price_minor: 45000,
      currency: "EUR",
      image_url: null,
      url: "https://marketplace.example/listings/100",
      status: "reserved",
    };
    expect(await rows(db, sql`select chat_json::jsonb as shown from listings where id = 100`)).toEqual([
      { shown: bike },
    ]);
    const chats = createChatService({ db, publish: () => {} });
    const list = await chats.list(21, 20);
    expect(list.map((c) => [c.id, c.archived, c.listing, c.peer])).toEqual(
      expect.arrayContaining([
        [1, false, bike, { id: 11, display_name: null, avatar_url: null }],
        [2, false, null, { id: 12, display_name: null, avatar_url: null }],
      ]),
    );
    expect(list).toHaveLength(2);
    expect(list.find((c) => c.id === 1)?.last_message).toMatchObject({ id: 3, kind: "text", deleted_by: "sender" });

    // 0025 validated 0023's checks; 0024's index was built, and is valid.
    expect(
      await rows(
        db,
        sql`select conname, convalidated from pg_constraint
        where conrelid = 'messages'::regclass and conname in ('messages_kind_known', 'messages_deleted_by_known')
        order by conname`,
      ),
    ).toEqual([
      { conname: "messages_deleted_by_known", convalidated: true },
      { conname: "messages_kind_known", convalidated: true },
    ]);
    expect(
      await rows(
        db,
        sql`select c.relname, i.indisvalid, i.indisready from pg_index i join pg_class c on c.oid = i.indexrelid
        where c.relname = 'chat_participants_user_archived_idx'`,
      ),
    ).toEqual([{ relname: "chat_participants_user_archived_idx", indisvalid: true, indisready: true }]);
    // The checks hold: an unknown kind or deleter is refused.
    await expect(db.execute(sql`update messages set kind = 'video' where id = 1`)).rejects.toThrow();
    await expect(db.execute(sql`update messages set deleted_by = 'moderator' where id = 1`)).rejects.toThrow();

    // Writing goes on: a send, an edit and a delete of an old message, an archive.
    const sent = await messages.send(12, 2, "after the migration", null);
    expect(sent.message).toMatchObject({ kind: "text", data: null, attachments: [], deleted_by: null, sender_id: 12 });
    expect((await messages.edit(11, 1, "is the bike still available?")).kind).toBe("text");
    expect((await messages.remove(21, 2)).deleted_by).toBe("sender");
    await chats.archive(11, 1, true);
    expect((await chats.list(11, 20)).map((c) => c.id)).toEqual([]);
    expect((await chats.list(11, 20, true)).map((c) => [c.id, c.archived])).toEqual([[1, true]]);
  });
});
