/**
 * PostgreSQL only: marking an old message read in a long chat must not count the rest of the chat under the
 * participant's row lock (0010 bounded lc_mark_read's counting; before, marking the 10th message of a 100k
 * chat read counted the other 99,990: 65 ms with sends and deletes in the chat waiting). Measured without
 * timing: the tuples of `messages` the call read, from pg_stat_xact_user_tables (heap) and the index entries of
 * its indexes (pg_stat_get_xact_tuples_returned: there is no pg_stat_xact_user_indexes) in the call's own
 * transaction. The count it leaves must still be exact (a recount). The same measure on the
 * functions before 0010 (a database migrated to 0009 with the real runner) shows the unbounded count.
 */
import { rmSync } from "node:fs";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrationsFolder } from "../src/db/client.ts";
import { seedBigAccount } from "./support/big-account.ts";
import { type DatabaseTarget, databaseTargets } from "./support/databases.ts";
import { migrationsFolderCopy } from "./support/migration-folders.ts";
import { migrate } from "./support/migration-watch.ts";

const postgres = databaseTargets().find((target) => target.name === "postgres");

/** The long chat: buyer and seller in turn, the seller has read nothing. */
const CHAT_MESSAGES = 20_000;
/** Which message is marked read: an old one, near the chat's start. */
const MARKED = 10;
/** The most tuples of `messages` marking it read may read: a tenth of the chat. */
const MAX_TUPLES = CHAT_MESSAGES / 10;

interface LongChat {
  url: string;
  chatId: number;
  sellerId: number;
  firstMessageId: number;
  drop(): Promise<void>;
}

/** A new database of `target`, migrated to `folder`, with one chat of CHAT_MESSAGES messages. */
async function longChatOn(target: DatabaseTarget, folder: string): Promise<LongChat> {
  const created = await target.create();
  if (!("url" in created.options)) throw new Error("the postgres target must give a URL");
  const url = created.options.url;
  await migrate(url, folder);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { sellerId } = await seedBigAccount(client, {
      sellerId: 90_000_000,
      chats: 1,
      messagesPerChat: CHAT_MESSAGES,
    });
    const { rows } = await client.query<{ chat_id: string; first: string }>(
      "select c.id as chat_id, min(m.id) as first from chats c join messages m on m.chat_id = c.id where c.seller_id = $1 group by c.id",
      [sellerId],
    );
    return {
      url,
      chatId: Number(rows[0]!.chat_id),
      sellerId,
      firstMessageId: Number(rows[0]!.first),
      drop: created.drop,
    };
  } finally {
    await client.end();
  }
}

/** The seller marks the MARKED-th message read, in a transaction of its own: what it read and what it left. */
async function markOldMessageRead({ url, chatId, sellerId, firstMessageId }: LongChat) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const messageId = firstMessageId + MARKED - 1;
    await client.query("begin");
    const { rows } = await client.query<{ status: string; unread_count: string }>(
      "select status, unread_count from lc_mark_read($1, $2, $3) limit 1",
      [sellerId, chatId, messageId],
    );
    // This transaction's reads of `messages` so far: the call's (and nothing else: it is the only statement).
    const read = (
      await client.query<{ heap: string; index: string }>(
        `select (select coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)
                 from pg_stat_xact_user_tables where relname = 'messages') as heap,
                (select coalesce(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0)
                 from pg_index where indrelid = 'messages'::regclass) as index`,
      )
    ).rows[0]!;
    await client.query("commit");
    const counts = (
      await client.query<{ kept: number; recounted: number; total: number; summed: number }>(
        `select p.unread_count as kept,
           (select count(*)::int from messages m where m.chat_id = p.chat_id and m.sender_id <> p.user_id
              and m.deleted_at is null and m.id > p.last_read_message_id) as recounted,
           (select unread_total::int from user_streams s where s.user_id = p.user_id) as total,
           (select sum(unread_count)::int from chat_participants q where q.user_id = p.user_id) as summed
         from chat_participants p where p.chat_id = $1 and p.user_id = $2`,
        [chatId, sellerId],
      )
    ).rows[0]!;
    return {
      status: rows[0]?.status,
      answered: Number(rows[0]?.unread_count),
      heapTuplesRead: Number(read.heap),
      indexEntriesRead: Number(read.index),
      ...counts,
    };
  } finally {
    await client.end();
  }
}

describe.runIf(postgres)(`marking the ${MARKED}th message of a ${CHAT_MESSAGES}-message chat read`, () => {
  let current: LongChat;
  let before0010: LongChat;
  const folders: string[] = [];

  beforeAll(async () => {
    const cutAfter0009 = migrationsFolderCopy(migrationsFolder, "0009_listings");
    folders.push(cutAfter0009);
    [current, before0010] = await Promise.all([
      longChatOn(postgres!, migrationsFolder),
      longChatOn(postgres!, cutAfter0009),
    ]);
  }, 120_000);

  afterAll(async () => {
    for (const folder of folders) rmSync(folder, { recursive: true, force: true });
    await Promise.all([current?.drop(), before0010?.drop()]);
  });

  it(`reads fewer than ${MAX_TUPLES} of its messages, and leaves an exact count`, async () => {
    const result = await markOldMessageRead(current);
    console.info(`mark_read of an old message, now: ${JSON.stringify(result)}`);
    expect(result.status).toBe("read");
    expect(result.heapTuplesRead).toBeLessThan(MAX_TUPLES);
    expect(result.indexEntriesRead).toBeLessThan(MAX_TUPLES);
    // The buyer's messages after the 10th: half of the rest.
    expect(result.recounted).toBe((CHAT_MESSAGES - MARKED) / 2);
    expect(result).toMatchObject({ answered: result.recounted, kept: result.recounted, total: result.summed });
  });

  it("self-check: the lc_mark_read before 0010 counts the rest of the chat, which the bound catches", async () => {
    const result = await markOldMessageRead(before0010);
    console.info(`mark_read of an old message, before 0010: ${JSON.stringify(result)}`);
    expect(result.status).toBe("read");
    expect(Math.max(result.heapTuplesRead, result.indexEntriesRead)).toBeGreaterThanOrEqual(MAX_TUPLES);
    expect(Math.max(result.heapTuplesRead, result.indexEntriesRead)).toBeGreaterThanOrEqual(CHAT_MESSAGES - MARKED);
    expect(result).toMatchObject({ answered: result.recounted, kept: result.recounted });
  });
});
