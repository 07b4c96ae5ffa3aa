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
 *
 * `BENCH_WEBHOOKS=1`: the instances send webhooks (CONTRACT §9) to a receiver in a process of its own
 * (webhook-receiver.ts: counts, answers 204, checks one signature in 100); each run adds the deliveries
 * received, the pending rows when the load stops and the seconds until none is left. `BENCH_WEBHOOKS=down`:
 * WEBHOOK_URL is a closed port for the whole run; each run adds the pending rows on disk after it and the
 * instances' RSS before and after. Either writes bench/results/chat-write-webhooks[-down].json instead.
 * `BENCH_WEBHOOKS=eager`: as `1`, with WEBHOOK_YIELD_MAX_S=0: deliveries never step aside for the sends, so the
 * run shows what delivering costs the write path while it happens (…-webhooks-eager.json).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import pg from "pg";
import type WebSocket from "ws";
import {
  cpuSeconds,
  cpuSince,
  cpuSnapshot,
  databaseUrl,
  freePort,
  open,
  percentile,
  root,
  serviceRssKiB,
  startChat,
  stopChats,
  token,
  trackChild,
  typeScriptLoader,
  withDatabase,
} from "./support.ts";
import type { ReceiverStats } from "./webhook-receiver.ts";
import { measureWriteCost } from "./write-cost.ts";

const pairs = Number(process.env.BENCH_PAIRS ?? 100);
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
/** Unset: no webhooks (the default run). `1`: to a fast receiver. `down`: to a closed port. */
const webhooks = process.env.BENCH_WEBHOOKS === "down" ? "down" : process.env.BENCH_WEBHOOKS ? "on" : undefined;
/** Deliveries at once, never yielding to the sends (WEBHOOK_YIELD_MAX_S=0). */
const eager = process.env.BENCH_WEBHOOKS === "eager";
/** How long the bench waits for the backlog to drain after the load (the issue asks for 10 s at most). */
const drainLimitSeconds = 60;

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

/** webhook-receiver.ts in a process of its own, so that its CPU is not the load generator's. */
async function startReceiverProcess(secret: string) {
  const child: ChildProcess = trackChild(
    spawn(process.execPath, [...typeScriptLoader, join(root, "bench/webhook-receiver.ts")], {
      cwd: root,
      env: { PATH: process.env.PATH ?? "", BENCH_WEBHOOK_SECRET: secret, BENCH_WEBHOOK_VERIFY_EVERY: "100" },
      stdio: ["ignore", "pipe", "inherit"],
    }),
  );
  const line = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once("line", (first) => {
      lines.close();
      resolve(first);
    });
    child.once("exit", (code) => reject(new Error(`the webhook receiver exited (${code}) before it listened`)));
  });
  const { port } = JSON.parse(line) as { port: number };
  return {
    child,
    url: `http://127.0.0.1:${port}/webhooks`,
    stats: async () => (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()) as ReceiverStats,
  };
}

/** Rows of webhook_deliveries not yet delivered nor dead. */
const pendingRows = async (db: pg.Client) =>
  Number(
    (
      await db.query<{ n: string }>(
        "select count(*)::text as n from webhook_deliveries where next_attempt_at is not null",
      )
    ).rows[0]!.n,
  );

async function run(spec: RunSpec) {
  const { instances } = spec;
  return withDatabase(async (url) => {
    const prefix = `lc-bench:${randomBytes(3).toString("hex")}:`;
    const secret = `whsec_${randomBytes(32).toString("base64")}`;
    const receiver = webhooks === "on" ? await startReceiverProcess(secret) : undefined;
    const webhookEnv: Record<string, string> = webhooks
      ? {
          WEBHOOK_URL: receiver?.url ?? `http://127.0.0.1:${await freePort()}/webhooks`,
          WEBHOOK_SECRET: secret,
          ...(eager ? { WEBHOOK_YIELD_MAX_S: "0" } : {}),
        }
      : {};
    const chats = await Promise.all(
      Array.from({ length: instances }, (_, i) => startChat(url, prefix, `bench-${i}`, { ...spec.env, ...webhookEnv })),
    );
    const writeCost = await measureWriteCost(url);
    const db = webhooks ? new pg.Client({ connectionString: url }) : undefined;
    await db?.connect();
    const rssOfChats = () => chats.reduce((sum, c) => sum + serviceRssKiB(c.child.pid ?? 0), 0);
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
      const rss = { before: webhooks ? rssOfChats() : 0, windowStart: 0 };
      let pendingAtWindowStart = 0;
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
      if (db) {
        // Against the end of the run: the memory an instance holds for a backlog that grows (none, it is on disk).
        rss.windowStart = rssOfChats();
        pendingAtWindowStart = await pendingRows(db);
      }
      await writeCost.windowStarts();
      measuring = true;
      const before = cpuSnapshot(chats.map((c) => c.child.pid ?? 0));
      const receiverCpuBefore = receiver ? cpuSeconds(receiver.child.pid ?? 0) : 0;
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, seconds * 1_000));
      measuring = false;
      const elapsed = (performance.now() - t0) / 1000;
      const cpu = cpuSince(before);
      const receiverCpu = receiver ? cpuSeconds(receiver.child.pid ?? 0) - receiverCpuBefore : 0;
      await writeCost.windowEnds();
      stop = true;
      await Promise.all(loops);
      const webhookResult = db
        ? await webhooksAfterLoad(db, receiver, rss, pendingAtWindowStart, rssOfChats)
        : undefined;
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
        ...(webhookResult && {
          webhooks: { ...webhookResult, receiverCpuMsPerMessage: receiver ? perMessage(receiverCpu) : null },
        }),
      };
    } finally {
      await db?.end();
      await stopChats(chats.map((c) => c.child));
      receiver?.child.kill("SIGKILL");
    }
  });
}

/**
 * With webhooks on: the pending rows when the load stopped, then (with a receiver) how long until none is left
 * and what the receiver got; the instances' RSS before the load, at the measured window's start, when the load
 * stopped, and after the drain.
 */
async function webhooksAfterLoad(
  db: pg.Client,
  receiver: Awaited<ReturnType<typeof startReceiverProcess>> | undefined,
  rss: { before: number; windowStart: number },
  pendingAtWindowStart: number,
  rssOfChats: () => number,
) {
  const stopped = performance.now();
  const pendingAtStop = await pendingRows(db);
  const rssAtStopKiB = rssOfChats();
  let pending = pendingAtStop;
  let drainSeconds: number | null = null;
  if (receiver) {
    while (pending > 0 && performance.now() - stopped < drainLimitSeconds * 1_000) {
      await new Promise((r) => setTimeout(r, 100));
      pending = await pendingRows(db);
    }
    if (pending === 0) drainSeconds = Number(((performance.now() - stopped) / 1000).toFixed(1));
  }
  const counts = (
    await db.query<{ recorded: string; delivered: string; dead: string }>(
      `select count(*)::text as recorded, count(delivered_at)::text as delivered, count(dead_at)::text as dead
       from webhook_deliveries`,
    )
  ).rows[0]!;
  const stats = await receiver?.stats();
  return {
    mode: receiver ? "receiver" : "closed port",
    /** Rows recorded in the run, delivered and dead (a delivered row is kept WEBHOOK_KEEP_DELIVERED_S). */
    recorded: Number(counts.recorded),
    delivered: Number(counts.delivered),
    dead: Number(counts.dead),
    pendingAtWindowStart,
    pendingAtStop,
    /** Pending rows when the bench stopped looking (0 once drained; the backlog on disk with a closed port). */
    pendingAfter: pending,
    drainSeconds,
    received: stats
      ? {
          requests: stats.requests,
          distinctIds: stats.deliveredIds,
          badSignatures: stats.badSignatures,
          verified: stats.verified,
        }
      : null,
    /** Before the load, when the measured window starts (2 s into it), when it stops, after the drain. */
    rssKiB: { ...rss, atStop: rssAtStopKiB, after: rssOfChats() },
  };
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
const resultsName = { on: "chat-write-webhooks.json", down: "chat-write-webhooks-down.json", off: "chat-write.json" };
const resultsFile = eager ? "chat-write-webhooks-eager.json" : resultsName[webhooks ?? "off"];
writeFileSync(join(resultsDir, resultsFile), `${JSON.stringify(results, null, 2)}\n`);
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
if (webhooks) {
  console.log(
    `webhooks (${webhooks === "on" ? "to a receiver" : "to a closed port"}): recorded, delivered, dead | received requests (distinct ids, bad signatures of checked) | pending at the window's start, when the load stopped | pending after | seconds to drain | chat RSS MiB before, at the window's start, at stop, after | receiver CPU ms/msg`,
  );
  const mib = (kib: number) => (kib / 1024).toFixed(1);
  for (const r of results.chat) {
    const w = r.webhooks!;
    const got = w.received
      ? `${w.received.requests} (${w.received.distinctIds}, ${w.received.badSignatures} of ${w.received.verified})`
      : "-";
    console.log(
      `${r.label} | ${w.recorded}, ${w.delivered}, ${w.dead} | ${got} | ${w.pendingAtWindowStart}, ${w.pendingAtStop} | ${w.pendingAfter} | ${w.drainSeconds ?? "-"} | ${mib(w.rssKiB.before)}, ${mib(w.rssKiB.windowStart)}, ${mib(w.rssKiB.atStop)}, ${mib(w.rssKiB.after)} | ${w.receiverCpuMsPerMessage ?? "-"}`,
    );
  }
}
process.exit(0);
