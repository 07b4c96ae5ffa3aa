/**
 * `npm run bench:big`: what the busiest seller costs, next to a buyer with one chat, on real PostgreSQL
 * (DATABASE_URL) and Redis (REDIS_URL): a seller with BENCH_BIG_CHATS chats (100,000) and three messages
 * each, seeded by SQL (test/support/big-account.ts) in a fresh database, one listings-chat process in
 * production mode. It prints, for both users: the instance's CPU per connect and the time to the
 * `connected` frame; `GET /api/v1/chats` and `GET /api/v1/chats/unread` p50/p99 and body size; and another
 * user's send p99 alone and while the seller's reads run 20 in parallel. Writes bench/results/big-account.json.
 * Not a test: it asserts nothing.
 */
import { randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import WebSocket from "ws";
import { seedBigAccount } from "../services/listings-chat/test/support/big-account.ts";
import { cpuSeconds, percentile, root, startChat, stopChats, token, withDatabase } from "./support.ts";

const chats = Number(process.env.BENCH_BIG_CHATS ?? 100_000);
const sellerId = 60_000_000;
const buyerOfOne = 90_000_001;
const sellerOfOne = 90_000_002;
const otherSender = 90_000_003;
const otherReceiver = 90_000_004;

const headersOf = (userId: number) => ({ "x-internal-token": token, "x-user-id": String(userId) });
const summary = (ms: number[]) => {
  const sorted = [...ms].sort((a, b) => a - b);
  return { p50Ms: Number(percentile(sorted, 0.5).toFixed(2)), p99Ms: Number(percentile(sorted, 0.99).toFixed(2)) };
};

/** Connects `times` sockets one after the other; time to `connected`, and the instance's CPU per connect. */
async function connects(port: number, pid: number, userId: number, times: number) {
  const waits: number[] = [];
  const cpuBefore = cpuSeconds(pid);
  for (let i = 0; i < times; i++) {
    const started = performance.now();
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`, {
      headers: headersOf(userId),
      perMessageDeflate: false,
    });
    await new Promise<void>((resolve, reject) => {
      ws.on("message", (data) => {
        if ((JSON.parse(String(data)) as { type: string }).type === "connected") resolve();
      });
      ws.once("error", reject);
    });
    waits.push(performance.now() - started);
    // Let the work that follows the greeting (presence) finish before the next one, so it is counted.
    await new Promise((r) => setTimeout(r, 200));
    ws.terminate();
  }
  const cpuMs = ((cpuSeconds(pid) - cpuBefore) * 1000) / times;
  return { ...summary(waits), cpuMsPerConnect: Number(cpuMs.toFixed(1)) };
}

/**
 * `times` requests of `path` as `userId`, one after the other, after 20 untimed ones: each connection of the
 * read pool plans its statements on first use, as a server that has run for a minute already has.
 */
async function reads(port: number, userId: number, path: string, times: number) {
  for (let i = 0; i < 20; i++) {
    await fetch(`http://127.0.0.1:${port}${path}`, { headers: headersOf(userId) }).then((r) => r.arrayBuffer());
  }
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < times; i++) {
    const started = performance.now();
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: headersOf(userId) });
    bytes = (await res.arrayBuffer()).byteLength;
    ms.push(performance.now() - started);
  }
  return { ...summary(ms), bodyBytes: bytes };
}

/** Another user's sends over REST for `seconds`, one at a time; with `readers` seller loops reading meanwhile. */
async function sendsWhileReading(port: number, chatId: number, readers: number, seconds: number) {
  let reading = true;
  let readsDone = 0;
  const loops = Array.from({ length: readers }, async (_, i) => {
    for (let n = 0; reading; n++) {
      const path = (i + n) % 2 ? "/api/v1/chats/unread" : "/api/v1/chats";
      await fetch(`http://127.0.0.1:${port}${path}`, { headers: headersOf(sellerId) }).then((r) => r.arrayBuffer());
      readsDone += 1;
    }
  });
  const ms: number[] = [];
  const until = performance.now() + seconds * 1000;
  while (performance.now() < until) {
    const started = performance.now();
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/chats/${chatId}/messages`, {
      method: "POST",
      headers: { ...headersOf(otherSender), "content-type": "application/json" },
      body: JSON.stringify({ content: "while the seller reads", client_msg_id: randomUUID() }),
    });
    await res.arrayBuffer();
    ms.push(performance.now() - started);
  }
  reading = false;
  await Promise.all(loops);
  return { ...summary(ms), sends: ms.length, sellerReadsPerSecond: Math.round(readsDone / seconds) };
}

const result = await withDatabase(async (url) => {
  const { port, child } = await startChat(
    url,
    `lc-bench-big:${process.pid}:`,
    "bench-big",
    process.env.BENCH_READ_POOL_SIZE ? { DATABASE_READ_POOL_SIZE: process.env.BENCH_READ_POOL_SIZE } : {},
  );
  try {
    const client = new pg.Client({ connectionString: url, statement_timeout: 0 });
    await client.connect();
    const seededIn = performance.now();
    await seedBigAccount(client, { sellerId, chats, messagesPerChat: 3 });
    // A database just loaded is still being vacuumed and checkpointed: let that finish before measuring, as
    // it would have long before a real seller's busy day.
    await client.query("vacuum analyze");
    await client.query("checkpoint");
    await client.end();
    const seedSeconds = Math.round((performance.now() - seededIn) / 1000);
    const open = async (buyer: number, seller: number) => {
      const res = await fetch(`http://127.0.0.1:${port}/api/v1/chats`, {
        method: "POST",
        headers: { ...headersOf(buyer), "content-type": "application/json" },
        body: JSON.stringify({ listing_id: 1, seller_id: seller }),
      });
      return ((await res.json()) as { id: number }).id;
    };
    await open(buyerOfOne, sellerOfOne);
    const otherChat = await open(otherSender, otherReceiver);
    const pid = child.pid ?? 0;
    const of = async (userId: number) => ({
      connect: await connects(port, pid, userId, 30),
      chatList: await reads(port, userId, "/api/v1/chats", 300),
      unread: await reads(port, userId, "/api/v1/chats/unread", 300),
    });
    const buyer = await of(buyerOfOne);
    const seller = await of(sellerId);
    const sendAlone = await sendsWhileReading(port, otherChat, 0, 5);
    const sendWhileSellerReads = await sendsWhileReading(port, otherChat, 20, 10);
    return {
      at: new Date().toISOString(),
      chats,
      messages: chats * 3,
      seedSeconds,
      buyer,
      seller,
      sendAlone,
      sendWhileSellerReads,
    };
  } finally {
    await stopChats([child]);
  }
});

mkdirSync(join(root, "bench/results"), { recursive: true });
writeFileSync(join(root, "bench/results/big-account.json"), `${JSON.stringify(result, null, 2)}\n`);
const row = (name: string, b: unknown, s: unknown) =>
  console.log(`${name} | ${JSON.stringify(b)} | ${JSON.stringify(s)}`);
console.log(`seller with ${result.chats} chats, ${result.messages} messages (seeded in ${result.seedSeconds} s)`);
console.log("measure | buyer with one chat | seller");
row("connect", result.buyer.connect, result.seller.connect);
row("GET /api/v1/chats", result.buyer.chatList, result.seller.chatList);
row("GET /api/v1/chats/unread", result.buyer.unread, result.seller.unread);
console.log(`another user's send, alone: ${JSON.stringify(result.sendAlone)}`);
console.log(`another user's send, 20 seller reads in parallel: ${JSON.stringify(result.sendWhileSellerReads)}`);
process.exit(0);
