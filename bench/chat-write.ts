/**
 * `npm run bench:chat`: the write path as users see it, on real PostgreSQL (DATABASE_URL) and Redis
 * (REDIS_URL). Pairs of users chat over WebSocket in a closed loop (each buyer sends, waits for its ack and
 * for the seller's socket to receive the message, then sends again) through 1 and then 2 listings-chat
 * processes; and pgbench's raw single-row INSERT rate on the same server in the same run, as the baseline.
 * Runs with group commit off and on (SEND_BATCH_MAX, SEND_BATCH_WAIT_MS), and reports the CPU each part
 * spends per message: the chat instances, PostgreSQL's backends, Redis and the load generator itself.
 * Also what each message costs PostgreSQL: WAL bytes, full-page images, index entries and row versions per
 * table (write-cost.ts; run it on a quiet server, WAL is the server's).
 * `BENCH_RUNS=1,3` picks runs. Prints a table and writes bench/results/chat-write.json. Not a test: it
 * asserts nothing.
 */
import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type WebSocket from "ws";
import {
  cpuSince,
  cpuSnapshot,
  databaseUrl,
  open,
  percentile,
  root,
  startChat,
  stopChats,
  token,
  withDatabase,
} from "./support.ts";
import { measureWriteCost } from "./write-cost.ts";

const pairs = Number(process.env.BENCH_PAIRS ?? 100);
const seconds = Number(process.env.BENCH_SECONDS ?? 10);

/** One run's settings: how many instances, and the variables that differ between runs. */
interface RunSpec {
  label: string;
  instances: number;
  env: Record<string, string>;
}

/** One pair's socket pair and the send it waits on. */
interface Pair {
  buyer: WebSocket;
  seller: WebSocket;
  chatId: number;
  waiting?: { ref: string; acked: boolean; delivered: boolean; done: () => void };
}

/** One listener per socket (not one per message), so the load generator spends little per frame. */
function listen(pair: Pair) {
  const settle = () => {
    const w = pair.waiting;
    if (w?.acked && w.delivered) {
      pair.waiting = undefined;
      w.done();
    }
  };
  pair.buyer.on("message", (data) => {
    const frame = JSON.parse(String(data)) as { type: string; ref?: string };
    if (frame.type === "ack" && pair.waiting && frame.ref === pair.waiting.ref) {
      pair.waiting.acked = true;
      settle();
    }
  });
  pair.seller.on("message", (data) => {
    const frame = JSON.parse(String(data)) as { type: string; message?: { client_msg_id?: string } };
    if (frame.type === "new_message" && pair.waiting && frame.message?.client_msg_id === pair.waiting.ref) {
      pair.waiting.delivered = true;
      settle();
    }
  });
}

async function run(spec: RunSpec) {
  const { instances } = spec;
  return withDatabase(async (url) => {
    const prefix = `lc-bench:${randomBytes(3).toString("hex")}:`;
    const chats = await Promise.all(
      Array.from({ length: instances }, (_, i) => startChat(url, prefix, `bench-${i}`, spec.env)),
    );
    const writeCost = await measureWriteCost(url);
    try {
      const ports = chats.map((c) => c.port);
      const base = 500_000 + Math.floor(Math.random() * 1000) * 1000;
      const chatIds: number[] = [];
      for (let i = 0; i < pairs; i++) {
        const res = await fetch(`http://127.0.0.1:${ports[i % ports.length]}/api/v1/chats`, {
          method: "POST",
          headers: { "x-internal-token": token, "x-user-id": String(base + 2 * i), "content-type": "application/json" },
          body: JSON.stringify({ listing_id: i + 1, seller_id: base + 2 * i + 1 }),
        });
        chatIds.push(((await res.json()) as { id: number }).id);
      }
      // Buyer and seller on different instances when there are two, so every message crosses the bus.
      const sockets: Pair[] = await Promise.all(
        Array.from({ length: pairs }, async (_, i) => ({
          buyer: await open(ports[i % ports.length]!, base + 2 * i),
          seller: await open(ports[(i + 1) % ports.length]!, base + 2 * i + 1),
          chatId: chatIds[i]!,
        })),
      );
      for (const pair of sockets) listen(pair);
      const latencies: number[] = [];
      let measuring = false;
      let stop = false;
      const loops = sockets.map((pair) =>
        (async () => {
          while (!stop) {
            const ref = randomUUID();
            const started = performance.now();
            await new Promise<void>((done) => {
              pair.waiting = { ref, acked: false, delivered: false, done };
              pair.buyer.send(
                JSON.stringify({ type: "send_message", chat_id: pair.chatId, content: "bench", client_msg_id: ref }),
              );
            });
            if (measuring) latencies.push(performance.now() - started);
          }
        })(),
      );
      await new Promise((r) => setTimeout(r, 2_000));
      await writeCost.windowStarts();
      measuring = true;
      const before = cpuSnapshot(chats.map((c) => c.child.pid ?? 0));
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, seconds * 1_000));
      measuring = false;
      const elapsed = (performance.now() - t0) / 1000;
      const cpu = cpuSince(before);
      await writeCost.windowEnds();
      stop = true;
      await Promise.all(loops);
      for (const { buyer, seller } of sockets) {
        buyer.terminate();
        seller.terminate();
      }
      latencies.sort((a, b) => a - b);
      const count = latencies.length;
      const perMessage = (cpuSeconds: number) => Number(((cpuSeconds * 1000) / Math.max(1, count)).toFixed(3));
      return {
        label: spec.label,
        instances,
        pairs,
        messages: count,
        messagesPerSecond: Math.round(count / elapsed),
        p50Ms: Number(percentile(latencies, 0.5).toFixed(1)),
        p99Ms: Number(percentile(latencies, 0.99).toFixed(1)),
        cpuMsPerMessage: {
          chat: perMessage(cpu.chat),
          postgres: perMessage(cpu.postgres),
          redis: perMessage(cpu.redis),
          loadGenerator: perMessage(cpu.self),
        },
        /** Of the machine's cores, how busy they were on average (1.0: all of them). */
        machineBusy: Number(cpu.machineBusy.toFixed(2)),
        /** WAL, full-page images, index entries and row versions per message (write-cost.ts). */
        postgres: await writeCost.finish(),
      };
    } finally {
      await stopChats(chats.map((c) => c.child));
    }
  });
}

/** pgbench: raw single-row INSERTs on the same server, 1 and 10 clients, 5 s each. */
function pgbenchInserts(): { clients: number; insertsPerSecond: number }[] {
  return [1, 10].map((clients) => {
    const out = execFileSync(
      "bash",
      [
        "-c",
        `db=lc_bench_pgb_$$; psql "${databaseUrl}" -qc "create database $db" && ` +
          `url="${databaseUrl.replace(/\/[^/]*$/, "")}/$db"; psql "$url" -qc "create table t (id bigint generated always as identity primary key, v text)" && ` +
          `echo "insert into t (v) values ('x');" > /tmp/lc-bench-insert.sql && ` +
          `pgbench -n -c ${clients} -j ${clients} -T 5 -f /tmp/lc-bench-insert.sql "$url" 2>&1; psql "${databaseUrl}" -qc "drop database $db with (force)"`,
      ],
      { encoding: "utf8" },
    );
    const tps = /tps = ([\d.]+)/.exec(out)?.[1];
    return { clients, insertsPerSecond: Math.round(Number(tps ?? 0)) };
  });
}

/** Group commit off (each send its own transaction), then on, for 1 and 2 instances. */
const runs: RunSpec[] = [
  { label: "1 instance, each send its own transaction", instances: 1, env: { SEND_BATCH_MAX: "1" } },
  { label: "1 instance, group commit (same turn)", instances: 1, env: {} },
  { label: "1 instance, group commit (2 ms window)", instances: 1, env: { SEND_BATCH_WAIT_MS: "2" } },
  { label: "2 instances, group commit (same turn)", instances: 2, env: {} },
];
const only = process.env.BENCH_RUNS?.split(",").map(Number);
const chat = [];
for (const [i, spec] of runs.entries()) if (!only || only.includes(i + 1)) chat.push(await run(spec));
const results = { at: new Date().toISOString(), pgbench: pgbenchInserts(), chat };
// BENCH_RESULTS_DIR: elsewhere than bench/results (bench:runtimes keeps each runtime's apart).
const resultsDir = process.env.BENCH_RESULTS_DIR ?? join(root, "bench/results");
mkdirSync(resultsDir, { recursive: true });
writeFileSync(join(resultsDir, "chat-write.json"), `${JSON.stringify(results, null, 2)}\n`);
console.log(
  `pgbench raw INSERT: ${results.pgbench.map((r) => `${r.insertsPerSecond}/s with ${r.clients} client(s)`).join(", ")}`,
);
console.log(
  "run | pairs | stored+delivered msg/s | p50 ms | p99 ms | CPU ms/msg: chat, postgres, redis, load generator | machine busy | per msg: WAL bytes, full-page images, index entries",
);
for (const r of results.chat) {
  const c = r.cpuMsPerMessage;
  const w = r.postgres;
  console.log(
    `${r.label} | ${r.pairs} | ${r.messagesPerSecond} | ${r.p50Ms} | ${r.p99Ms} | ${c.chat}, ${c.postgres}, ${c.redis}, ${c.loadGenerator} | ${r.machineBusy} | ${w.walBytesPerMessage}, ${w.fullPageImagesPerMessage}, ${w.indexEntriesPerMessage}`,
  );
}
console.log("row versions per message (HOT share of updates):");
for (const r of results.chat) {
  const tables = Object.entries(r.postgres.tables)
    .map(([name, t]) => `${name} ${t.rowVersionsPerMessage}${t.hotShare === null ? "" : ` (${t.hotShare})`}`)
    .join(", ");
  console.log(`${r.label}: ${tables}`);
}
process.exit(0);
