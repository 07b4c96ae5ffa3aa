/**
 * `npm run bench:memory`: what an idle socket costs each service, measured in the V8 heap rather than in
 * RSS (which after a storm is mostly garbage not yet collected, and moves with GC). One gateway in front of
 * one listings-chat (production mode, PostgreSQL of DATABASE_URL in a fresh database, Redis of REDIS_URL);
 * BENCH_MEMORY_SOCKETS sockets (1,000) are opened one at a time, each as a browser does (access token,
 * ws-token, upgrade, `connected` frame). Each service writes a heap snapshot (`--heapsnapshot-signal`) with
 * one socket open and again with all of them; the difference of the snapshots' sizes, divided by the
 * sockets added, is the heap each socket holds (a pipe's two sockets, in the gateway). RSS is not read here:
 * writing a snapshot takes memory the process keeps; bench:storm reads it. Writes
 * bench/results/socket-memory.json.
 */
import type { ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import jwt from "jsonwebtoken";
import WebSocket from "ws";
import { jwtAudience, root, startChat, startGateway, stopChats, withDatabase } from "./support.ts";

const sockets = Number(process.env.BENCH_MEMORY_SOCKETS ?? 1_000);
const jwtSecret = "bench-memory-access-token-secret-0123456789abcdef";
const firstUser = 81_000_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The sum of every node's own size in a heap snapshot, in bytes. */
function heapBytes(file: string): number {
  const snapshot = JSON.parse(readFileSync(file, "utf8")) as {
    snapshot: { meta: { node_fields: string[] } };
    nodes: number[];
  };
  const fields = snapshot.snapshot.meta.node_fields;
  const width = fields.length;
  const sizeAt = fields.indexOf("self_size");
  let total = 0;
  for (let i = sizeAt; i < snapshot.nodes.length; i += width) total += snapshot.nodes[i] ?? 0;
  return total;
}

/** Asks a service for a heap snapshot (written into `dir`) and returns its heap size once it is written. */
async function snapshot(child: ChildProcess, dir: string): Promise<number> {
  const before = new Set(readdirSync(dir));
  child.kill("SIGUSR2");
  for (let i = 0; i < 600; i++) {
    await sleep(200);
    const file = readdirSync(dir).find((f) => !before.has(f) && f.endsWith(".heapsnapshot"));
    if (!file) continue;
    // Written when it has a size and the size stops changing.
    let size = -1;
    for (;;) {
      const now = readFileSync(join(dir, file)).length;
      if (now > 0 && now === size) break;
      size = now;
      await sleep(500);
    }
    const bytes = heapBytes(join(dir, file));
    rmSync(join(dir, file));
    return bytes;
  }
  throw new Error("no heap snapshot within 2 minutes");
}

async function connect(port: number, userId: number): Promise<WebSocket> {
  const access = jwt.sign({ sub: String(userId) }, jwtSecret, {
    algorithm: "HS256",
    expiresIn: 600,
    audience: jwtAudience,
  });
  const res = await fetch(`http://127.0.0.1:${port}/api/v2/ws-token`, {
    method: "POST",
    headers: { authorization: `Bearer ${access}` },
  });
  if (!res.ok) throw new Error(`ws-token answered ${res.status}`);
  const { token } = (await res.json()) as { token: string };
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat?token=${token}`, { perMessageDeflate: false });
  await new Promise<void>((resolve, reject) => {
    ws.once("message", () => resolve());
    ws.once("error", reject);
  });
  return ws;
}

const dir = mkdtempSync(join(tmpdir(), "lc-bench-memory-"));
const snapshotFlags = `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${dir}`;
try {
  const result = await withDatabase(async (url) => {
    const chat = await startChat(url, `lc-bench-memory:${process.pid}:`, "bench-memory", {
      NODE_OPTIONS: snapshotFlags,
    });
    const gateway = await startGateway(chat.port, {
      JWT_SECRET: jwtSecret,
      WS_TOKEN_SECRET: "bench-memory-ws-token-secret-fedcba9876543210",
      REDIS_KEY_PREFIX: `lc-bench-memory:${process.pid}:`,
      NODE_OPTIONS: snapshotFlags,
    });
    const open: WebSocket[] = [];
    try {
      // One socket first, so that everything made once (pools, caches, compiled code) is in the baseline.
      open.push(await connect(gateway.port, firstUser));
      await sleep(1_000);
      const base = { gateway: await snapshot(gateway.child, dir), chat: await snapshot(chat.child, dir) };
      for (let i = 1; i <= sockets; i++) open.push(await connect(gateway.port, firstUser + i));
      await sleep(3_000);
      const full = { gateway: await snapshot(gateway.child, dir), chat: await snapshot(chat.child, dir) };
      const perSocket = (bytes: number) => Number((bytes / 1024 / sockets).toFixed(2));
      return {
        at: new Date().toISOString(),
        sockets,
        heapKiBPerSocket: { gateway: perSocket(full.gateway - base.gateway), chat: perSocket(full.chat - base.chat) },
      };
    } finally {
      for (const ws of open) ws.terminate();
      await stopChats([gateway.child, chat.child]);
    }
  }, "lc_bench_memory");
  console.log(JSON.stringify(result, null, 2));
  mkdirSync(join(root, "bench/results"), { recursive: true });
  writeFileSync(join(root, "bench/results/socket-memory.json"), `${JSON.stringify(result, null, 2)}\n`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
