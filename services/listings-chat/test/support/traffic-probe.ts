/**
 * App-like traffic on one connection set up as the service's pools are (READ COMMITTED pinned, 5 s lock
 * timeout, 10 s statement timeout): in each of a few chats in turn, a send (lc_send_messages), the other
 * participant marking it read (lc_mark_read) and a message page as GET /chats/:id/messages reads it. Each
 * call's latency and error is recorded, to see what a migration running beside it costs the service.
 */
import { randomBytes } from "node:crypto";
import { Limits } from "@listings-chat/shared";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import { type Database, defaultPostgresTimeouts, withPinnedIsolation } from "../../src/db/client.ts";
import { defaultRetry, type RetryOptions, retryingOnce } from "../../src/db/retry.ts";
import * as schema from "../../src/db/schema.ts";
import { pageOfMessages } from "../../src/messages/repository.ts";

/** A chat the probe writes to: `senderId` sends, `readerId` reads. */
export interface ProbeChat {
  chatId: number;
  senderId: number;
  readerId: number;
}

export type ProbeOperation = "send" | "mark_read" | "page";

export interface ProbeError {
  operation: ProbeOperation;
  /** SQLSTATE when PostgreSQL gave one (55P03: lock timeout, 57014: statement timeout). */
  code?: string;
  message: string;
  /** PostgreSQL's context: the function and statement that failed. */
  where?: string;
}

export interface ProbeSummary {
  calls: number;
  errors: ProbeError[];
  /** Calls that lost to a concurrent transaction and were run again (as the service runs them). */
  retried: number;
  maxMs: number;
  p99Ms: number;
  /** Each operation's slowest call. */
  maxMsByOperation: Partial<Record<ProbeOperation, number>>;
}

export interface ProbeOptions {
  /** Between two rounds (send, read, page), so that the probe does not take a core of its own. */
  pauseMs?: number;
  /** A message page as the service reads it; replace it for a schema older than schema.ts. */
  readPage?: (client: pg.Client, chatId: number) => Promise<unknown>;
}

/** The service's page read: pageOfMessages with one more row than the default page, as the service asks. */
const servicePage = (client: pg.Client, chatId: number) =>
  pageOfMessages(drizzle(client, { schema }) as unknown as Database, chatId, undefined, Limits.messagesPageDefault + 1);

/**
 * Starts the traffic; `ready` resolves after its first full round (so that a migration started then has traffic
 * beside it from its first statement), `stop()` ends it after the call in progress and closes the connection.
 */
export async function startProbe(
  url: string,
  chats: ProbeChat[],
  { pauseMs = 10, readPage = servicePage }: ProbeOptions = {},
): Promise<{ ready: Promise<void>; stop(): Promise<ProbeSummary> }> {
  if (chats.length === 0) throw new Error("startProbe needs at least one chat to write to");
  const timeouts = defaultPostgresTimeouts;
  const client = new pg.Client({
    connectionString: withPinnedIsolation(url),
    statement_timeout: timeouts.statementMs,
    lock_timeout: timeouts.lockMs,
    idle_in_transaction_session_timeout: timeouts.idleInTransactionMs,
  });
  client.on("error", () => {});
  await client.connect();
  const latencies: number[] = [];
  const errors: ProbeError[] = [];
  let retried = 0;
  const countingRetries: RetryOptions = {
    ...defaultRetry,
    sleep: (ms) => {
      retried += 1;
      return defaultRetry.sleep(ms);
    },
  };
  const maxMsByOperation: ProbeSummary["maxMsByOperation"] = {};
  const run = randomBytes(4).toString("hex");

  /**
   * Runs and times one call; its result, or undefined when it failed (recorded). A call that lost to a
   * concurrent transaction (40001, 40P01) is run once more through the service's own retryingOnce (db/retry.ts,
   * as executeWrite runs every write): a user never sees that loss. 0023's file ALTERs chat_participants, then
   * messages and listings, in one transaction (applied in deployments: it cannot change); a send queued behind it
   * can be the victim of the deadlock check, about one upgrade from 0011 in four here. Those runs are counted.
   */
  async function timed<T>(operation: ProbeOperation, call: () => Promise<T>): Promise<T | undefined> {
    const started = performance.now();
    try {
      return await retryingOnce(call, countingRetries);
    } catch (error) {
      const { code, message, where } = error as { code?: string; message?: string; where?: string };
      errors.push({ operation, code, message: message ?? String(error), ...(where ? { where } : {}) });
      return undefined;
    } finally {
      const ms = performance.now() - started;
      latencies.push(ms);
      maxMsByOperation[operation] = Math.max(maxMsByOperation[operation] ?? 0, Math.round(ms));
    }
  }

  let stopping = false;
  let markReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    markReady = resolve;
  });
  const loop = (async () => {
    for (let round = 0; !stopping; round++) {
      const { chatId, senderId, readerId } = chats[round % chats.length]!;
      const messageId = await timed("send", async () => {
        const { rows } = await client.query<{ status: string; id: string | null }>(
          "select status, message->>'id' as id from lc_send_messages($1::jsonb) order by ord limit 1",
          [JSON.stringify([[senderId, chatId, `probe ${round}`, `probe-${run}-${round}`, []]])],
        );
        if (rows[0]?.status !== "created" || !rows[0].id) throw new Error(`send answered ${JSON.stringify(rows[0])}`);
        return rows[0].id;
      });
      if (messageId) {
        await timed("mark_read", async () => {
          const { rows } = await client.query<{ status: string }>("select status from lc_mark_read($1, $2, $3)", [
            readerId,
            chatId,
            messageId,
          ]);
          if (rows[0]?.status !== "read") throw new Error(`mark_read answered ${JSON.stringify(rows[0])}`);
        });
      }
      await timed("page", () => readPage(client, chatId));
      if (round === 0) markReady();
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
    }
  })();
  // A round that throws outside `timed` (none should) must not leave `ready` pending forever.
  loop.catch(() => markReady());

  return {
    ready,
    async stop() {
      stopping = true;
      try {
        await loop;
      } finally {
        await client.end().catch(() => {});
      }
      const sorted = [...latencies].sort((a, b) => a - b);
      return {
        calls: sorted.length,
        errors,
        retried,
        maxMs: Math.round(sorted.at(-1) ?? 0),
        p99Ms: Math.round(sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))] ?? 0),
        maxMsByOperation,
      };
    },
  };
}
