// The partitioned event tables (migrations 0015–0021): events cross partition bounds without a gap or a change of
// order in anyone's stream, partitions are added ahead of the ids in use, and a write whose events outran them
// adds them itself and is stored.
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { createChatService } from "../src/chats/service.ts";
import { ensureEventPartitions } from "../src/db/event-partitions.ts";
import { readStreamPage } from "../src/events/log.ts";
import { createRateLimiter } from "../src/limits/rate-limiter.ts";
import { createMessageService } from "../src/messages/service.ts";
import { databaseTargets, suiteDatabase } from "./support/databases.ts";

interface Partition {
  table: string;
  name: string;
  /** The lower bound; null for the first partition (MINVALUE). */
  from: number | null;
}

describe.each(databaseTargets())("partitioned event tables on $name", (target) => {
  const database = suiteDatabase(target);
  let nextId = 9_100_000;
  const newId = () => ++nextId;

  async function rows<T>(query: ReturnType<typeof sql>): Promise<T[]> {
    return ((await database().db.execute(query)) as unknown as { rows: T[] }).rows;
  }

  async function partitions(): Promise<Partition[]> {
    const found = await rows<{ parent: string; name: string; bound: string }>(
      sql`select i.inhparent::regclass::text as parent, c.relname::text as name,
            pg_get_expr(c.relpartbound, c.oid) as bound
          from pg_inherits i join pg_class c on c.oid = i.inhrelid
          where i.inhparent in ('chat_events'::regclass, 'user_events'::regclass)`,
    );
    return found
      .map(({ parent, name, bound }) => {
        const from = /FROM \('?(\d+)'?\)/.exec(bound)?.[1];
        return { table: parent, name, from: from === undefined ? null : Number(from) };
      })
      .sort((a, b) => (a.from ?? -1) - (b.from ?? -1) || a.table.localeCompare(b.table));
  }

  async function countIn(table: string): Promise<number> {
    const [row] = await rows<{ n: number }>(sql`select count(*)::int as n from ${sql.identifier(table)}`);
    return row!.n;
  }

  const services = () => ({
    chats: createChatService({ db: database().db, publish: () => {} }),
    messages: createMessageService({ db: database().db, publish: () => {}, limits: createRateLimiter() }),
  });

  it("start as the old tables below a bound and one partition of 100 million ids ahead, on both tables alike", async () => {
    const found = await partitions();
    expect(found.map((p) => [p.table, p.name, p.from])).toEqual([
      ["chat_events", "chat_events_0", null],
      ["user_events", "user_events_0", null],
      ["chat_events", "chat_events_200000000", 200_000_000],
      ["user_events", "user_events_200000000", 200_000_000],
    ]);
    const [setting] = await rows<{ width: number; high: number }>(
      sql`select width::int as width, high::int as high from event_partitioning`,
    );
    expect(setting).toEqual({ width: 100_000_000, high: 300_000_000 });
    // Nothing to add while two widths of ids are left.
    expect(await ensureEventPartitions(database().db)).toBe(0);
  });

  it("put events across a bound in both partitions, and each stream reads on without a gap", async () => {
    const { chats, messages } = services();
    const buyer = newId();
    const seller = newId();
    const { chat } = await chats.open(buyer, newId(), seller);
    await messages.send(buyer, chat.id, "below the bound", null);
    // The next events take the last ids of the first partition, then the first of the next.
    await database().db.execute(sql`select setval('chat_events_id_seq', 200000000 - 3)`);
    const sent: number[] = [];
    for (let i = 0; i < 6; i++) {
      const sender = i % 2 === 0 ? seller : buyer;
      sent.push((await messages.send(sender, chat.id, `message ${i}`, null)).message.id);
    }
    // An edit and a delete append their events through the other form of lc_append_events.
    await messages.edit(seller, sent[0]!, "edited, above the bound");
    await messages.remove(buyer, sent[1]!);

    expect(await countIn("chat_events_200000000")).toBeGreaterThanOrEqual(5);
    // Each event of the chat is in both participants' streams, in the partition of its id.
    expect(await countIn("user_events_200000000")).toBe(2 * (await countIn("chat_events_200000000")));

    for (const user of [buyer, seller]) {
      const page = await readStreamPage(database().db, user, 0, { maxEvents: 100 });
      const ids = page.events.map((e) => e.event_id);
      expect(ids).toEqual(ids.map((_, i) => i + 1));
      const types = page.events.map((e) => e.type);
      expect(types[0]).toBe("chat_created");
      expect(types.filter((t) => t === "new_message")).toHaveLength(7);
      expect(types.slice(-2)).toEqual(["message_edited", "message_deleted"]);
      // Read from the middle, as a reconnecting client does: the same events after its cursor.
      const rest = await readStreamPage(database().db, user, 3, { maxEvents: 100 });
      expect(rest.events.map((e) => e.event_id)).toEqual(ids.slice(3));
    }
  });

  it("a write whose events outran the partitions adds them and is stored", async () => {
    const { chats, messages } = services();
    const buyer = newId();
    const seller = newId();
    const { chat } = await chats.open(buyer, newId(), seller);
    // Small partitions from here on, and ids at the end of the last one: nothing is there for the next event.
    await database().db.execute(sql`update event_partitioning set width = 100`);
    await database().db.execute(sql`select setval('chat_events_id_seq', 300000000 - 1)`);

    const { message } = await messages.send(buyer, chat.id, "past every partition", null);

    const page = await readStreamPage(database().db, seller, 1, { maxEvents: 10 });
    expect(page.events.map((e) => [e.type, e.type === "new_message" ? e.message.id : null])).toEqual([
      ["new_message", message.id],
    ]);
    const added = (await partitions()).filter((p) => (p.from ?? 0) >= 300_000_000);
    // Two widths of 100 ahead of the newest id, on both tables.
    expect(added.map((p) => p.name)).toEqual([
      "chat_events_300000000",
      "user_events_300000000",
      "chat_events_300000100",
      "user_events_300000100",
      "chat_events_300000200",
      "user_events_300000200",
    ]);
    expect(await countIn("chat_events_300000000")).toBe(1);
    expect(await ensureEventPartitions(database().db)).toBe(0);
  });
});
