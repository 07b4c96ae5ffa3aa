/**
 * PostgreSQL only: the plan of a message page (GET /api/v1/chats/:id/messages) in a 100,000-message chat behind
 * 300,000 newer messages of other chats (the review's skewed seed). The query is the service's own:
 * pageOfMessages (src/messages/repository.ts, what messages.page runs on the read pool, with one row more than
 * the page), its SQL and parameters taken from drizzle's logger as it runs, then run again under
 * EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON). The page must be read from an index of (chat_id, id) in its order:
 * no sort, no row read and thrown away, a few buffers whatever the table's size. With only
 * `(chat_id, id DESC NULLS LAST)` (before 0012) the page walked the primary key backwards past every newer
 * message (300,000 rows removed by filter in the review).
 */
import { Limits } from "@listings-chat/shared";
import { drizzle } from "drizzle-orm/node-postgres";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, type DatabaseHandle, openDatabase } from "../src/db/client.ts";
import * as schema from "../src/db/schema.ts";
import { pageOfMessages } from "../src/messages/repository.ts";
import { databaseTargets } from "./support/databases.ts";
import { historySkewedSeed, type SkewedSeed, seedSkewed } from "./support/skewed-seed.ts";

const postgres = databaseTargets().find((target) => target.name === "postgres");

/** The most buffers a page may touch: the index's levels and the page's few heap pages. */
const MAX_BUFFERS = 50;

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  "Scan Direction"?: string;
  "Actual Rows"?: number;
  "Rows Removed by Filter"?: number;
  "Rows Removed by Index Recheck"?: number;
  Filter?: string;
  "Shared Hit Blocks": number;
  "Shared Read Blocks": number;
  Plans?: PlanNode[];
}

const nodesOf = (plan: PlanNode): PlanNode[] => [plan, ...(plan.Plans ?? []).flatMap(nodesOf)];

describe.runIf(postgres)("the history page of a 100,000-message chat behind 300,000 newer messages", () => {
  let handle: DatabaseHandle;
  let drop: () => Promise<void> = async () => {};
  let pool: pg.Pool;
  let seed: SkewedSeed;

  beforeAll(async () => {
    const created = await postgres!.create();
    drop = created.drop;
    handle = await openDatabase(created.options);
    pool = (handle.db as unknown as { $client: pg.Pool }).$client;
    const client = await pool.connect();
    try {
      await client.query("set statement_timeout = 0");
      seed = await seedSkewed(client, historySkewedSeed);
    } finally {
      await client.query("reset statement_timeout");
      client.release();
    }
    console.info(`history plan: seeded ${JSON.stringify(historySkewedSeed)} in ${seed.ms} ms`);
  }, 180_000);

  afterAll(async () => {
    await handle?.close();
    await drop();
  });

  /** The key columns of an index, in order. */
  async function columnsOf(index: string): Promise<string[]> {
    const { rows } = await pool.query<{ name: string }>(
      `select a.attname as name
       from pg_index i cross join unnest(i.indkey) with ordinality as k(attnum, position)
       join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
       where i.indexrelid = $1::regclass order by k.position`,
      [index],
    );
    return rows.map((r) => r.name);
  }

  /** Runs the service's page query on `client`, then its captured SQL under EXPLAIN: the rows and the plan. */
  async function pageAndPlan(client: pg.PoolClient, before: number | undefined) {
    const queries: Array<{ sql: string; params: unknown[] }> = [];
    const db = drizzle(client, {
      schema,
      logger: { logQuery: (sql, params) => queries.push({ sql, params }) },
    }) as unknown as Database;
    const rows = await pageOfMessages(db, seed.longChat.id, before, Limits.messagesPageDefault + 1);
    expect(queries).toHaveLength(1);
    const [{ sql, params }] = queries as [{ sql: string; params: unknown[] }];
    const explained = await client.query<{ "QUERY PLAN": Array<{ Plan: PlanNode }> }>(
      `explain (analyze, buffers, format json) ${sql}`,
      params,
    );
    return { rows, sql, plan: explained.rows[0]!["QUERY PLAN"][0]!.Plan };
  }

  /** What is wrong with a page's plan: nothing when one index scan of (chat_id, id) gives the page in order. */
  async function problemsOf(plan: PlanNode): Promise<string[]> {
    const nodes = nodesOf(plan);
    const problems: string[] = [];
    const scans = nodes.filter((n) => n["Relation Name"] === "messages");
    if (scans.length !== 1) problems.push(`messages read by ${scans.length} plan nodes`);
    for (const scan of scans) {
      const how = `${scan["Node Type"]}${scan["Index Name"] ? ` of ${scan["Index Name"]}` : ""}`;
      if (!["Index Scan", "Index Only Scan"].includes(scan["Node Type"])) problems.push(`messages read by ${how}`);
      const columns = scan["Index Name"] ? await columnsOf(scan["Index Name"]) : [];
      if (scan["Index Name"] && columns.join() !== "chat_id,id") problems.push(`${how}: columns (${columns})`);
      const removed = (scan["Rows Removed by Filter"] ?? 0) + (scan["Rows Removed by Index Recheck"] ?? 0);
      if (removed > 0) problems.push(`${how}: ${removed} rows removed by filter`);
      if (scan["Actual Rows"] !== Limits.messagesPageDefault + 1) problems.push(`${how}: ${scan["Actual Rows"]} rows`);
    }
    // The index gives the order: no sort of any kind.
    for (const sort of nodes.filter((n) => n["Node Type"].includes("Sort"))) problems.push(sort["Node Type"]);
    const buffers = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"];
    if (buffers >= MAX_BUFFERS) problems.push(`${buffers} buffers`);
    return problems;
  }

  const describePlan = (plan: PlanNode) =>
    `${plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]} buffers: ` +
    nodesOf(plan)
      .map((n) =>
        [
          n["Node Type"],
          n["Scan Direction"],
          n["Index Name"],
          n["Rows Removed by Filter"] && `removed ${n["Rows Removed by Filter"]}`,
        ]
          .filter(Boolean)
          .join(" "),
      )
      .join(" <- ");

  it.each([
    ["the first page", () => undefined],
    // Near the chat's oldest end: 99,000 of its messages and all 300,000 newer ones are after the cursor.
    ["a page before a cursor deep in the chat", () => seed.longChat.firstMessageId + 1_000],
  ])(
    "%s: an index scan of (chat_id, id) in its order, nothing filtered out, under 50 buffers",
    async (what, cursor) => {
      const before = cursor();
      const client = await pool.connect();
      try {
        const { rows, sql, plan } = await pageAndPlan(client, before);
        const newest = before === undefined ? seed.longChat.lastMessageId : before - 1;
        expect(rows.map((r) => r.id)).toEqual(
          Array.from({ length: Limits.messagesPageDefault + 1 }, (_, i) => newest - i),
        );
        console.info(`history plan, ${what}: ${describePlan(plan)}\n  ${sql}`);
        expect(await problemsOf(plan), describePlan(plan)).toEqual([]);
      } finally {
        client.release();
      }
    },
  );

  it("self-check: with the history index of before 0012, (chat_id, id DESC NULLS LAST), the first page fails", async () => {
    const client = await pool.connect();
    try {
      // The schema of 0011 for this transaction only: the (chat_id, id) indexes dropped, the old one made.
      await client.query("begin");
      const { rows } = await client.query<{ name: string }>(
        `select i.indexrelid::regclass::text as name from pg_index i
         where i.indrelid = 'messages'::regclass and i.indkey::text = (
           select string_agg(attnum::text, ' ' order by array_position(array['chat_id', 'id'], attname::text))
           from pg_attribute where attrelid = 'messages'::regclass and attname in ('chat_id', 'id'))`,
      );
      expect(rows.length, "no (chat_id, id) index on messages: the test above fails anyway").toBeGreaterThan(0);
      for (const { name } of rows) await client.query(`drop index ${name}`);
      await client.query('create index "messages_chat_id_idx_of_0011" on messages (chat_id, id desc nulls last)');
      const { plan } = await pageAndPlan(client, undefined);
      const problems = await problemsOf(plan);
      console.info(`history plan before 0012, the first page: ${describePlan(plan)}\n  ${problems.join("; ")}`);
      expect(problems.length, describePlan(plan)).toBeGreaterThan(0);
    } finally {
      await client.query("rollback");
      client.release();
    }
  });
});
