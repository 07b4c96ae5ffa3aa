/**
 * A seller with 20,000 chats and 60,000 messages on real PostgreSQL (support/big-account.ts), and the query
 * plans of what a page asks for them: the chat list, the badge and the event stream. None may read the
 * messages, the events or the participants sequentially, and the ordered ones must come in index order (no
 * sort): their cost is the page's, not the account's. Then the answers themselves, against recounts.
 */
import { drizzle } from "drizzle-orm/node-postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { recentContactsOf, sharesPresence } from "../src/chats/repository.ts";
import { createChatService, UNREAD_CHATS_LISTED } from "../src/chats/service.ts";
import { type Database, type DatabaseHandle, openDatabase } from "../src/db/client.ts";
import { lastEventId } from "../src/events/log.ts";
import { PRESENCE_CONTACTS } from "../src/hub/hub.ts";
import { type BigAccount, seedBigAccount } from "./support/big-account.ts";
import { databaseTargets } from "./support/databases.ts";

const postgres = databaseTargets().find((t) => t.name === "postgres");

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  Plans?: PlanNode[];
}

function nodesOf(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodesOf)];
}

describe.runIf(postgres)("a big account on PostgreSQL: plans and answers that cost the page, not the account", () => {
  let handle: DatabaseHandle;
  let drop: () => Promise<void> = async () => {};
  let account: BigAccount;

  beforeAll(async () => {
    const created = await postgres!.create();
    drop = created.drop;
    handle = await openDatabase(created.options);
    const pool = (handle.db as unknown as { $client: import("pg").Pool }).$client;
    const client = await pool.connect();
    try {
      await client.query("set statement_timeout = 0");
      account = await seedBigAccount(client, { sellerId: 50_000_000, chats: 20_000, messagesPerChat: 3 });
      // Blocks and reports of other people, so that the planner knows those tables are not small.
      await client.query(
        `insert into blocks (blocker_id, blocked_id) select i, i + 1 from generate_series(1, 20000) as i;
         insert into reports (reporter_id, reason, target_type, target_id)
           select i, 'spam', 'user', i + 1 from generate_series(1, 20000) as i;
         analyze blocks; analyze reports;`,
      );
    } finally {
      await client.query("reset statement_timeout");
      client.release();
    }
  }, 180_000);

  afterAll(async () => {
    await handle?.close();
    await drop();
  });

  const bigTables = ["messages", "chat_events", "user_events", "chat_participants", "chats", "blocks", "reports"];

  /**
   * The plans of every statement `run` makes PostgreSQL execute, nested ones (inside functions) included:
   * auto_explain reports each to this session as a notice.
   */
  async function nestedPlansOf(run: (client: import("pg").PoolClient) => Promise<unknown>, settings: string[] = []) {
    const pool = (handle.db as unknown as { $client: import("pg").Pool }).$client;
    const client = await pool.connect();
    const notices: string[] = [];
    const onNotice = (notice: { message?: string }) => notices.push(notice.message ?? "");
    client.on("notice", onNotice);
    try {
      await client.query("load 'auto_explain'");
      for (const setting of [
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_format = json",
        "auto_explain.log_level = notice",
        ...settings,
      ]) {
        await client.query(`set ${setting}`);
      }
      await run(client);
    } finally {
      client.off("notice", onNotice);
      await client.query("reset all");
      client.release();
    }
    return notices.map((notice) => {
      const { "Query Text": text, Plan } = JSON.parse(notice.slice(notice.indexOf("{"))) as {
        "Query Text": string;
        Plan: PlanNode;
      };
      return { text, nodes: nodesOf(Plan) };
    });
  }

  const seqScansOf = (nodes: PlanNode[]) =>
    nodes.filter((n) => n["Node Type"] === "Seq Scan" && bigTables.includes(n["Relation Name"] ?? ""));
  const sortsOf = (nodes: PlanNode[]) => nodes.filter((n) => n["Node Type"].includes("Sort"));

  const pageReads = [
    ["the chat list (first page of 100)", "lc_chat_list($1, 100)"],
    ["the badge's chats", `lc_unread($1, ${UNREAD_CHATS_LISTED})`],
    ["the event stream after a cursor", "lc_stream_page($1, 50000, null, 500, 262144)"],
    ["a gap in the event stream", "lc_stream_page($1, 50000, 50100, 500, 262144)"],
  ];
  // PL/pgSQL plans a statement for its first calls, then may keep a generic plan (parameters unknown): both
  // are what production runs.
  it.each([
    ...pageReads.map(([what, call]) => [what, call, "plan_cache_mode = auto"]),
    ...pageReads.map(([what, call]) => [what, call, "plan_cache_mode = force_generic_plan"]),
  ])("%s (%s, %s): no sequential scan of a big table, no sort", async (_, call, mode) => {
    const plans = await nestedPlansOf((client) => client.query(`select * from ${call}`, [account.sellerId]), [mode!]);
    // The function's own statement, reading the tables, and the call.
    const inner = plans.filter((plan) => bigTables.some((table) => plan.text.includes(table)));
    expect(inner.length).toBeGreaterThan(0);
    for (const { nodes } of plans) {
      expect(seqScansOf(nodes), JSON.stringify(nodes.map((n) => [n["Node Type"], n["Relation Name"]]))).toEqual([]);
      // Neither a sort nor an incremental one: the index gives the order.
      expect(sortsOf(nodes)).toEqual([]);
    }
  });

  it("shows and announces presence for the other participants of the 100 most recently active chats only", async () => {
    const contacts = await recentContactsOf(handle.db, account.sellerId, PRESENCE_CONTACTS);
    expect(contacts).toHaveLength(PRESENCE_CONTACTS);
    // The seeded buyers' chats are active in the order of their ids: the newest are the last buyers.
    const newestBuyers = Array.from(
      { length: PRESENCE_CONTACTS },
      (_, i) => account.firstBuyerId + account.chats - 1 - i,
    );
    expect(contacts).toEqual(newestBuyers);
    // And a buyer's contact is their seller.
    expect(await recentContactsOf(handle.db, account.firstBuyerId, PRESENCE_CONTACTS)).toEqual([account.sellerId]);
  });

  it("answers the chat list and the badge from kept values that equal a recount", async () => {
    const chats = createChatService({ db: handle.db, publish: () => {} });
    const list = await chats.list(account.sellerId, 100);
    expect(list).toHaveLength(100);
    // Newest activity first, each with its newest message and the seller's unread count (the buyers' two).
    for (let i = 1; i < list.length; i++) expect(list[i - 1]!.last_activity_at >= list[i]!.last_activity_at).toBe(true);
    for (const chat of list) {
      expect(chat.last_message?.chat_id).toBe(chat.id);
      expect(chat.unread_count).toBe(2);
    }
    const badge = await chats.unread(account.sellerId);
    expect(badge.total).toBe(account.chats * 2);
    expect(Object.keys(badge.chats)).toHaveLength(UNREAD_CHATS_LISTED);
    expect(JSON.stringify(badge).length).toBeLessThan(10_000);
    expect(await lastEventId(handle.db, account.sellerId)).toBe(account.chats + account.messages);

    // Reading the newest chat to its end takes its two away from the count and from the total.
    const newest = list[0]!;
    const read = await chats.markRead(account.sellerId, newest.id, newest.last_message!.id);
    expect(read.unread_count).toBe(0);
    expect((await chats.unread(account.sellerId)).total).toBe(account.chats * 2 - 2);
  });
  it.each(["plan_cache_mode = auto", "plan_cache_mode = force_generic_plan"])(
    "who shares presence (recent contacts, one pair) with no sequential scan, no sort (%s)",
    async (mode) => {
      const buyer = account.firstBuyerId + 11;
      const pool = (handle.db as unknown as { $client: import("pg").Pool }).$client;
      const chatId = Number((await pool.query("select id from chats where buyer_id = $1", [buyer])).rows[0].id);
      const plans = await nestedPlansOf(
        async (client) => {
          const onClient = drizzle(client) as unknown as Database;
          // Prepared statements: PostgreSQL plans a generic plan only after five custom ones.
          for (let i = 0; i < 6; i++) {
            expect(await recentContactsOf(onClient, account.sellerId, PRESENCE_CONTACTS)).toHaveLength(
              PRESENCE_CONTACTS,
            );
            expect(await sharesPresence(onClient, chatId, account.sellerId, buyer)).toBe(true);
          }
        },
        [mode],
      );
      expect(plans.some((plan) => plan.text.includes("lc_blocked"))).toBe(true);
      for (const { nodes } of plans) {
        expect(seqScansOf(nodes), JSON.stringify(nodes.map((n) => [n["Node Type"], n["Relation Name"]]))).toEqual([]);
        expect(sortsOf(nodes)).toEqual([]);
      }
    },
  );

  it("writes (send, read, edit, delete, open, block, report) with no sequential scan inside the write functions", async () => {
    const seller = account.sellerId;
    const buyer = account.firstBuyerId + 7;
    const pool = (handle.db as unknown as { $client: import("pg").Pool }).$client;
    const chatId = Number((await pool.query("select id from chats where buyer_id = $1", [buyer])).rows[0].id);
    const plans = await nestedPlansOf(async (client) => {
      const sent = await client.query("select * from lc_send_messages($1::jsonb)", [
        JSON.stringify([
          [buyer, chatId, "a new question", null],
          [seller, chatId, "an answer", null],
        ]),
      ]);
      const [question, answer] = [sent.rows[0].message.id, sent.rows.at(-1).message.id] as [number, number];
      await client.query("select * from lc_mark_read($1, $2, $3)", [seller, chatId, question]);
      await client.query("select * from lc_edit_message($1, $2, $3, $4)", [seller, answer, "a better answer", []]);
      await client.query("select * from lc_delete_message($1, $2)", [buyer, question]);
      const opened = await client.query("select * from lc_open_chat($1, $2, $3, false, true)", [
        999_999,
        account.firstBuyerId,
        seller,
      ]);
      // A chat's first messages (who has written is read under the chat's lock), with the rules' flags.
      const fresh = Number(opened.rows[0].chat.id);
      await client.query("select * from lc_send_messages($1::jsonb)", [
        JSON.stringify([
          [account.firstBuyerId, fresh, "first", null, ["phone"]],
          [seller, fresh, "first reply", null, null],
        ]),
      ]);
      // A block, a send it refuses, the unblock, and a report of each kind.
      await client.query("select * from lc_block_user($1, $2, 1000)", [seller, buyer]);
      await client.query("select * from lc_send_messages($1::jsonb)", [
        JSON.stringify([[buyer, chatId, "hello?", null]]),
      ]);
      await client.query("select * from lc_unblock_user($1, $2)", [seller, buyer]);
      for (const [type, id] of [
        ["message", answer],
        ["chat", chatId],
        ["user", seller],
      ] as const) {
        await client.query("select * from lc_report($1, 'spam', null, $2, $3, true)", [buyer, type, id]);
      }
    });
    expect(plans.length).toBeGreaterThan(20);
    const scans = plans.filter((plan) => seqScansOf(plan.nodes).length > 0);
    expect(scans.map((plan) => plan.text.slice(0, 200))).toEqual([]);
  });
});
