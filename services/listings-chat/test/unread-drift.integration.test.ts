// PostgreSQL only: the race needs real concurrent transactions, which PGlite (one connection) cannot have.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DatabaseHandle, openDatabase } from "../src/db/client.ts";
import { databaseTargets } from "./support/databases.ts";

const postgres = databaseTargets().find((target) => target.name === "postgres");

/** Resolves once the backend `pid` waits for a lock; fails after `ms` (the send never reached the lock). */
async function waitingForLock(observer: pg.Client, pid: number, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const { rows } = await observer.query<{ waiting: boolean }>(
      "select wait_event_type = 'Lock' as waiting from pg_stat_activity where pid = $1",
      [pid],
    );
    if (rows[0]?.waiting) return;
    if (Date.now() > deadline) throw new Error(`backend ${pid} did not wait for a lock within ${ms} ms`);
    // pg_stat_activity has no notification to await: poll it, briefly.
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function connect(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  return client;
}

describe.skipIf(!postgres)("unread counts under concurrent sends on postgres", () => {
  let handle: DatabaseHandle;
  let drop: () => Promise<void>;
  let url: string;
  const clients: pg.Client[] = [];
  let nextId = 7_000_000;
  const newId = () => ++nextId;

  beforeAll(async () => {
    const created = await postgres!.create();
    drop = created.drop;
    if (!("url" in created.options)) throw new Error("the postgres target must give a URL");
    url = created.options.url;
    handle = await openDatabase(created.options);
  });

  afterAll(async () => {
    await Promise.all(clients.map((client) => client.end()));
    await handle?.close();
    await drop?.();
  });

  const client = async () => {
    const opened = await connect(url);
    clients.push(opened);
    return opened;
  };

  async function openChat(db: pg.Client, buyer: number, seller: number): Promise<number> {
    const { rows } = await db.query<{ id: string }>(
      "select (chat->>'id') as id from lc_open_chat($1, $2, $3, false, true)",
      [newId(), buyer, seller],
    );
    return Number(rows[0]!.id);
  }

  /** Stores the sends ([sender, chat, content]) in one batch; the new messages' ids, in order. */
  async function send(db: pg.Client, sends: [number, number, string][]): Promise<number[]> {
    const batch = sends.map(([sender, chat, content]) => [sender, chat, content, `c${newId()}`, []]);
    const { rows } = await db.query<{ status: string; id: string }>(
      // A created send has a row for each participant's event: one per send here.
      "select distinct on (ord) status, (message->>'id') as id from lc_send_messages($1::jsonb) order by ord",
      [JSON.stringify(batch)],
    );
    for (const row of rows) expect(row.status).toBe("created");
    return rows.map((row) => Number(row.id));
  }

  /** Each participant's kept count beside a recount of the messages above their mark, and each total beside the sum. */
  async function counts(db: pg.Client, users: number[]) {
    const participants = await db.query<{ chat_id: string; user_id: string; kept: number; counted: number }>(
      `select p.chat_id, p.user_id, p.unread_count as kept,
         (select count(*)::int from messages m where m.chat_id = p.chat_id and m.sender_id <> p.user_id
            and m.deleted_at is null and m.id > coalesce(p.last_read_message_id, 0)) as counted
       from chat_participants p where p.user_id = any($1::bigint[]) order by 1, 2`,
      [users],
    );
    const totals = await db.query<{ user_id: string; kept: number; summed: number }>(
      `select s.user_id, s.unread_total::int as kept,
         (select coalesce(sum(p.unread_count), 0)::int from chat_participants p where p.user_id = s.user_id) as summed
       from user_streams s where s.user_id = any($1::bigint[]) order by 1`,
      [users],
    );
    return { participants: participants.rows, totals: totals.rows };
  }

  it("counts a message whose id was taken before a newer one committed and was read only if it is above the mark", async () => {
    const [sends, holder, reader, observer] = [await client(), await client(), await client(), await client()];
    const seller = newId();
    const [buyer, otherBuyer] = [newId(), newId()];
    const chat = await openChat(reader, buyer, seller);
    const heldChat = await openChat(reader, otherBuyer, seller);

    // The holder locks the other chat's row, so a batch that sends in `chat` and then in `heldChat` takes the
    // lower message id in `chat` and then waits (the foreign key's check of heldChat) before it counts anything.
    await holder.query("begin");
    await holder.query("select 1 from chats where id = $1 for update", [heldChat]);
    const senderPid = (await sends.query<{ pid: number }>("select pg_backend_pid() as pid")).rows[0]!.pid;
    const slow = send(sends, [
      [buyer, chat, "lower id, committed last"],
      [otherBuyer, heldChat, "in the held chat"],
    ]);
    await waitingForLock(observer, senderPid);

    // A later send in the same chat takes the higher id and commits first; the seller reads up to it.
    const [higher] = await send(reader, [[buyer, chat, "higher id, committed first"]]);
    const read = await reader.query<{ status: string; unread_count: string }>(
      "select status, unread_count from lc_mark_read($1, $2, $3)",
      [seller, chat, higher],
    );
    expect(read.rows[0]).toMatchObject({ status: "read" });
    expect(Number(read.rows[0]!.unread_count)).toBe(0);

    await holder.query("rollback");
    const [lower] = await slow;
    expect(lower).toBeLessThan(higher!);

    // The lower message is below the seller's mark: read. Only the held chat's message is unread.
    const { participants, totals } = await counts(observer, [seller, buyer, otherBuyer]);
    for (const row of participants) expect(row.kept, `chat ${row.chat_id}, user ${row.user_id}`).toBe(row.counted);
    for (const row of totals) expect(row.kept, `total of user ${row.user_id}`).toBe(row.summed);
    const sellerIn = (chatId: number) =>
      participants.find((row) => Number(row.chat_id) === chatId && Number(row.user_id) === seller)!;
    expect(sellerIn(chat).kept).toBe(0);
    expect(sellerIn(heldChat).kept).toBe(1);
    expect(totals.find((row) => Number(row.user_id) === seller)!.kept).toBe(1);

    // Marking read again changes nothing and answers the exact count: no stuck badge.
    const again = await reader.query<{ status: string; unread_count: string }>(
      "select status, unread_count from lc_mark_read($1, $2, $3)",
      [seller, chat, higher],
    );
    expect(again.rows[0]).toMatchObject({ status: "unchanged" });
    expect(Number(again.rows[0]!.unread_count)).toBe(0);
  });

  it("keeps the count exact when an old message of a long chat is marked read (the bounded count)", async () => {
    const db = await client();
    const [buyer, seller] = [newId(), newId()];
    const chat = await openChat(db, buyer, seller);
    // 1,500 of the seller's, with the buyer's own and deleted ones among them: more than mark_read recounts.
    const sends: [number, number, string][] = [];
    for (let i = 0; i < 1_500; i++) sends.push([i % 10 === 3 ? buyer : seller, chat, `m${i}`]);
    const ids = await send(db, sends);
    for (const i of [5, 15, 700])
      expect((await db.query("select status from lc_delete_message($1, $2)", [seller, ids[i]])).rows[0]).toEqual({
        status: "deleted",
      });

    const markedAt = async (i: number) => {
      const { rows } = await db.query<{ status: string; unread_count: string }>(
        "select status, unread_count from lc_mark_read($1, $2, $3)",
        [buyer, chat, ids[i]],
      );
      expect(rows[0]!.status).toBe("read");
      const { participants, totals } = await counts(db, [buyer]);
      expect(participants).toEqual([expect.objectContaining({ kept: participants[0]!.counted })]);
      expect(totals).toEqual([expect.objectContaining({ kept: totals[0]!.summed })]);
      expect(Number(rows[0]!.unread_count)).toBe(participants[0]!.counted);
      return participants[0]!.counted;
    };
    // From no marker, then from one marker to another, each with more than 1,000 messages after it.
    // After the 10th: 1,490, of which 149 are the buyer's own and 2 (the 16th, the 701st) deleted.
    expect(await markedAt(9)).toBe(1_490 - 149 - 2);
    await markedAt(20);
    await markedAt(400);
    // Past the last 1,000: the rest is recounted.
    await markedAt(1_200);
    expect(await markedAt(1_499)).toBe(0);
  });

  it("writes one user_streams row version per recipient and sender for a send", async () => {
    const db = await client();
    const [buyer, seller] = [newId(), newId()];
    const chat = await openChat(db, buyer, seller);
    const updates = async () => {
      // The sends' own backend flushes its table statistics when it goes idle after this (PostgreSQL 15+).
      await db.query("select pg_stat_force_next_flush()");
      await db.query("select 1");
      const { rows } = await db.query<{ n: string }>(
        "select n_tup_upd as n from pg_stat_user_tables where relname = 'user_streams'",
      );
      return Number(rows[0]!.n);
    };
    const before = await updates();
    const sendsMade = 20;
    for (let i = 0; i < sendsMade; i++) await send(db, [[i % 2 ? buyer : seller, chat, `s${i}`]]);
    // The release before wrote three: both stream rows in the append, then the recipient's total again.
    expect(await updates()).toBe(before + 2 * sendsMade);
  });
});
