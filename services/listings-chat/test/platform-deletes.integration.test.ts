/**
 * The platform's writes beside people's, at once, in the same chats (PostgreSQL, where the locks are real):
 * sends of both participants (through the group commit), system messages, and platform deletes of the messages
 * just stored, from 16 loops over REST. None deadlocks (the database's deadlock counter does not move: a
 * platform delete takes the chat's row before both participants', as a send does), every write is answered
 * 2xx, and the kept unread counts and totals equal a recount afterwards. Skipped when neither DATABASE_URL nor CI
 * is set; with CI set and no DATABASE_URL it fails (databases.ts).
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseTargets } from "./support/databases.ts";
import { startTestChat, type TestChat } from "./support/harness.ts";

const postgres = databaseTargets().find((t) => t.name === "postgres");

const CHATS = 4;
const LOOPS = 16;
const ROUNDS = 40;
const SELLER = 5_100_000;

describe.skipIf(!postgres)("platform deletes beside sends on postgres", () => {
  let chat: TestChat;
  let url: string;
  let drop: () => Promise<void>;

  beforeAll(async () => {
    const created = await postgres!.create();
    drop = created.drop;
    url = (created.options as { url: string }).url;
    // No send limit: the loops are one seller and four buyers writing as fast as they can.
    chat = await startTestChat({ database: created.options, overrides: { sendsPerMinute: 1_000_000 } });
  });

  afterAll(async () => {
    await chat?.stop();
    await drop?.();
  });

  const internal = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${chat.baseUrl}${path}`, {
      method,
      headers: { "content-type": "application/json", "x-internal-token": chat.internalToken },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json()) as { id: number } };
  };

  async function deadlocks(client: pg.Client): Promise<number> {
    const { rows } = await client.query<{ n: string }>(
      "select deadlocks::text as n from pg_stat_database where datname = current_database()",
    );
    return Number(rows[0]!.n);
  }

  it("never deadlock, answer every write, and keep unread counts exact", { timeout: 120_000 }, async () => {
    const chats: Array<{ id: number; buyer: number }> = [];
    for (let i = 0; i < CHATS; i++) {
      const buyer = SELLER + 1 + i;
      const opened = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: 5_200_000 + i, seller_id: SELLER });
      expect(opened.status).toBe(201);
      chats.push({ id: opened.body.id, buyer });
    }
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      // The statistics collector reports at transaction end: read it once before and once after a pause.
      const before = await deadlocks(client);
      const failures: string[] = [];
      let writes = 0;
      await Promise.all(
        Array.from({ length: LOOPS }, async (_, loop) => {
          for (let round = 0; round < ROUNDS; round++) {
            const { id, buyer } = chats[(loop + round) % CHATS]!;
            const sender = (loop + round) % 2 === 0 ? buyer : SELLER;
            const [sent, said] = await Promise.all([
              chat.api(sender, "POST", `/api/v1/chats/${id}/messages`, { content: `m ${loop}.${round}` }),
              internal("POST", `/internal/chat/chats/${id}/messages`, {
                content: "Offer updated",
                client_msg_id: randomUUID(),
              }),
            ]);
            const [removedSent, removedSaid] = await Promise.all([
              internal("DELETE", `/internal/chat/messages/${sent.body.id}`, { reason: "test" }),
              internal("DELETE", `/internal/chat/messages/${said.body.id}`),
            ]);
            for (const [what, res] of [
              ["send", sent],
              ["system message", said],
              ["delete of a send", removedSent],
              ["delete of a system message", removedSaid],
            ] as const) {
              writes += 1;
              if (res.status >= 300) failures.push(`${what}: ${res.status} ${JSON.stringify(res.body)}`);
            }
          }
        }),
      );
      expect(failures).toEqual([]);
      expect(writes).toBe(LOOPS * ROUNDS * 4);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      expect(await deadlocks(client)).toBe(before);

      // Every message of the run was deleted: nothing is unread, as kept and as counted again.
      const { rows } = await client.query<{ kept: string; counted: string; total: string; streams: string }>(
        `select
           (select coalesce(sum(unread_count), 0)::text from chat_participants) as kept,
           (select count(*)::text from chat_participants p join messages m on m.chat_id = p.chat_id
             where m.sender_id <> p.user_id and m.deleted_at is null
               and m.id > coalesce(p.last_read_message_id, 0)) as counted,
           (select coalesce(sum(unread_total), 0)::text from user_streams) as total,
           (select count(*)::text from user_streams) as streams`,
      );
      expect(rows[0]).toEqual({ kept: "0", counted: "0", total: "0", streams: String(CHATS + 1) });
    } finally {
      await client.end();
    }
  });
});
