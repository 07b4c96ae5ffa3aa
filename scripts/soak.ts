/**
 * `npm run soak`: a bounded chaos soak with real processes. Users chat through a gateway in front of two
 * listings-chat instances, on a PostgreSQL database and a redis-server of the soak's own, with the shared
 * browser client (ChatClient over Node's `ws`); a quarter of them are on a "restricted network" where
 * WebSocket never connects, so they live on REST polling. Meanwhile sockets are dropped at random, each
 * instance is killed (SIGKILL) and started again on its port, and Redis is paused (SIGSTOP).
 *
 * At the end every user's client has handed the page exactly their stored stream (1, 2, 3 … in order, no
 * event twice or missing), and every message a client got an answer for is in both participants' streams
 * exactly once. Exits 1 (after printing what differs) when anything is off.
 *
 * SOAK_SECONDS (120; CI runs 30), SOAK_USERS (48), DATABASE_URL (local PostgreSQL). Not part of `npm test`.
 */
import { ChatClient, type ChatEvent, type WebSocketLike } from "@listings-chat/shared/client";
import jwt from "jsonwebtoken";
import WebSocket from "ws";
import { withDatabase } from "../bench/support.ts";
import { randomSecret, sleep } from "../services/gateway/test/support/e2e.ts";
import {
  type RedisProcess,
  type ServiceProcess,
  startChatProcess,
  startGatewayProcess,
  startRedisProcess,
} from "../services/gateway/test/support/processes.ts";

const seconds = Number(process.env.SOAK_SECONDS ?? 120);
const userCount = Number(process.env.SOAK_USERS ?? 48);
const log = (line: string) => console.log(`soak ${((performance.now() - began) / 1000).toFixed(1)} s: ${line}`);
const began = performance.now();

/** A user of the soak: their client, what it handed the page, and their socket (to drop it). */
interface SoakUser {
  id: number;
  restricted: boolean;
  client: ChatClient;
  received: ChatEvent[];
  socket?: WebSocket;
  chats: number[];
}

interface Acked {
  messageId: number;
  users: [number, number];
}

/** A killed instance comes back on the same port, so the gateway's upstream list stays right. */
async function killAndRestart(instances: ServiceProcess[], index: number, env: Record<string, string>, downMs: number) {
  const instance = instances[index]!;
  log(`kill -9 chat instance ${index + 1} (port ${instance.port})`);
  await instance.stop("SIGKILL");
  await sleep(downMs);
  instances[index] = await startChatProcess({ ...env, CHAT_PORT: String(instance.port) });
  log(`chat instance ${index + 1} is back`);
}

async function soak(url: string) {
  const redis: RedisProcess = await startRedisProcess();
  const internalToken = randomSecret();
  const jwtSecret = randomSecret();
  const chatEnv = {
    DATABASE_URL: url,
    REDIS_URL: redis.url,
    INTERNAL_TOKEN: internalToken,
    SEND_LIMIT_PER_MINUTE: "100000",
  };
  const instances = [await startChatProcess(chatEnv), await startChatProcess(chatEnv)];
  const gateway = await startGatewayProcess({
    CHAT_UPSTREAMS: instances.map((i) => i.baseUrl).join(","),
    INTERNAL_TOKEN: internalToken,
    JWT_SECRET: jwtSecret,
    WS_TOKEN_SECRET: randomSecret(),
    REDIS_URL: redis.url,
    MAX_REQUESTS_PER_USER: "64",
  });
  const users: SoakUser[] = [];
  try {
    const firstId = 1_000_000 + Math.floor(Math.random() * 1_000) * 1_000;
    for (let i = 0; i < userCount; i++) {
      const id = firstId + i;
      const token = jwt.sign({ sub: String(id) }, jwtSecret, { algorithm: "HS256", expiresIn: seconds + 600 });
      const user: SoakUser = { id, restricted: i % 4 === 3, client: undefined!, received: [], chats: [] };
      user.client = new ChatClient({
        baseUrl: gateway.baseUrl,
        getAccessToken: () => token,
        lastEventId: 0,
        webSocket: (wsUrl) => {
          // A restricted network: the upgrade never gets through.
          const socket = new WebSocket(user.restricted ? `ws://127.0.0.1:9/blocked` : wsUrl);
          socket.on("error", () => {});
          user.socket = socket;
          return socket as unknown as WebSocketLike;
        },
      });
      user.client.on("event", (event) => user.received.push(event));
      users.push(user);
    }
    for (const user of users) user.client.start();

    // Every fourth user sells; each buyer talks with two sellers, so streams overlap.
    const sellers = users.filter((_, i) => i % 4 === 0);
    const buyers = users.filter((_, i) => i % 4 !== 0);
    const participants = new Map<number, [number, number]>();
    for (const [b, buyer] of buyers.entries()) {
      for (const seller of [sellers[b % sellers.length]!, sellers[(b + 1) % sellers.length]!]) {
        const chat = await buyer.client.api.openChat(b + 1, seller.id);
        buyer.chats.push(chat.id);
        seller.chats.push(chat.id);
        participants.set(chat.id, [buyer.id, seller.id]);
      }
    }
    log(`${users.length} users (${users.filter((u) => u.restricted).length} polling), ${participants.size} chats`);

    const acked: Acked[] = [];
    const failures: string[] = [];
    let sending = true;
    const senders = users.map(async (user) => {
      for (let n = 0; sending; n++) {
        await sleep(200 + Math.random() * 800);
        if (!sending) break;
        const chatId = user.chats[Math.floor(Math.random() * user.chats.length)]!;
        try {
          const message = await user.client.send(chatId, `user ${user.id} message ${n}`);
          acked.push({ messageId: message.id, users: participants.get(chatId)! });
        } catch (error) {
          failures.push(`user ${user.id}: send failed: ${String(error)}`);
        }
      }
    });

    let drops = 0;
    const dropper = (async () => {
      while (sending) {
        await sleep(500);
        const live = users.filter((u) => !u.restricted && u.socket?.readyState === WebSocket.OPEN);
        const victim = live[Math.floor(Math.random() * live.length)];
        if (victim) {
          victim.socket?.terminate();
          drops++;
        }
      }
    })();

    const ms = seconds * 1_000;
    const chattingSince = performance.now();
    const at = (fraction: number) => sleep(Math.max(0, chattingSince + fraction * ms - performance.now()));
    const chaos = (async () => {
      await at(0.2);
      await killAndRestart(instances, 0, chatEnv, 3_000);
      await at(0.5);
      log("Redis paused (SIGSTOP) for 3 s");
      await redis.pause(3_000);
      log("Redis resumed");
      await at(0.75);
      await killAndRestart(instances, 1, chatEnv, 3_000);
    })();

    await sleep(ms);
    sending = false;
    await chaos;
    await dropper;
    log(
      `sending stopped: ${acked.length} messages acknowledged, ${drops} sockets dropped; waiting for the sends in flight`,
    );
    await Promise.race([Promise.all(senders), sleep(60_000)]);

    // What is stored: each user's stream, read through the gateway as the page would.
    const stored = new Map<number, ChatEvent[]>();
    for (const user of users) {
      const events: ChatEvent[] = [];
      for (let after = 0; ; ) {
        const page = await user.client.api.events(after, 500);
        events.push(...page.events);
        if (!(page.has_more ?? page.events.length >= 500)) break;
        after = page.last_event_id;
      }
      stored.set(user.id, events);
    }
    // Polling clients catch up within a poll (5 s); sockets that were dropped resume.
    const deadline = performance.now() + 30_000;
    while (performance.now() < deadline && users.some((u) => u.received.length !== stored.get(u.id)!.length)) {
      await sleep(250);
    }

    const problems = [...failures];
    for (const user of users) {
      const events = stored.get(user.id)!;
      const dense = events.every((e, i) => e.event_id === i + 1);
      if (!dense) problems.push(`user ${user.id}: the stored stream is not 1, 2, 3 …`);
      const received = JSON.stringify(user.received);
      if (received !== JSON.stringify(events)) {
        const ids = user.received.map((e) => e.event_id);
        problems.push(
          `user ${user.id} (${user.client.mode}): received ${ids.length} events (last ${ids.at(-1)}), stored ${events.length}` +
            (ids.some((id, i) => id !== i + 1) ? `; out of order or repeated: ${ids.join(",")}` : ""),
        );
      }
    }
    const messagesIn = new Map(
      [...stored].map(([userId, events]) => [
        userId,
        events.flatMap((e) => (e.type === "new_message" ? [e.message.id] : [])),
      ]),
    );
    for (const { messageId, users: pair } of acked) {
      for (const userId of pair) {
        const times = messagesIn.get(userId)!.filter((id) => id === messageId).length;
        if (times !== 1) problems.push(`message ${messageId} is ${times} times in user ${userId}'s stream`);
      }
    }
    const events = [...stored.values()].reduce((n, e) => n + e.length, 0);
    const modes: Record<string, number> = {};
    for (const user of users) modes[user.client.mode] = (modes[user.client.mode] ?? 0) + 1;
    console.log(
      JSON.stringify({
        seconds,
        users: users.length,
        acked: acked.length,
        eventsChecked: events,
        drops,
        modes,
        problems: problems.length,
      }),
    );
    if (problems.length > 0) {
      for (const problem of problems.slice(0, 40)) console.log(`soak: ${problem}`);
      return false;
    }
    return acked.length > 0;
  } finally {
    for (const user of users) user.client.stop();
    await gateway.stop();
    await Promise.all(instances.map((i) => i.stop()));
    redis.kill();
  }
}

const passed = await withDatabase(soak, "lc_soak");
console.log(passed ? "soak passed" : "soak FAILED");
process.exit(passed ? 0 : 1);
