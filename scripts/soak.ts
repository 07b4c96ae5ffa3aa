/**
 * `npm run soak`: a bounded chaos soak with real processes. Users chat through a gateway in front of two
 * listings-chat instances, on a PostgreSQL database and a redis-server of the soak's own, with the shared
 * browser client (ChatClient over Node's `ws`); a quarter of them are on a "restricted network" where
 * WebSocket never connects, so they live on REST polling. Meanwhile sockets are dropped at random, each
 * instance is killed (SIGKILL) and started again on its port, and Redis is paused (SIGSTOP).
 *
 * Users also edit, delete and mark read. The instances send webhooks (CONTRACT §9) to a receiver in this
 * process that checks every signature; it answers 500 for 3 s and then hangs for 3 s, as one more fault.
 *
 * At the end every user's client has handed the page exactly their stored stream (1, 2, 3 … in order, no
 * event twice or missing), and every message a client got an answer for is in both participants' streams
 * exactly once. Once no webhook is pending, every stored change the webhooks report reached the receiver
 * (each message created, edited, deleted, each chat, each read marker), nothing reached it that the database
 * does not hold, and a delivery seen twice had the same webhook-id and body. Exits 1 (after printing what
 * differs) when anything is off.
 *
 * SOAK_SECONDS (120; CI runs 30), SOAK_USERS (48), DATABASE_URL (local PostgreSQL). Not part of `npm test`.
 */
import { randomBytes } from "node:crypto";
import { ChatClient, type ChatEvent, type WebSocketLike } from "@listings-chat/client";
import jwt from "jsonwebtoken";
import pg from "pg";
import WebSocket from "ws";
import { withDatabase } from "../bench/support.ts";
import { startWebhookReceiver, type WebhookReceiver } from "../bench/webhook-receiver.ts";
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
  /** Their own messages that were answered and not deleted: what they may edit or delete. */
  own: number[];
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
  const webhookSecret = `whsec_${randomBytes(32).toString("base64")}`;
  const receiver = await startWebhookReceiver({ secret: webhookSecret, keep: true });
  const chatEnv = {
    DATABASE_URL: url,
    REDIS_URL: redis.url,
    INTERNAL_TOKEN: internalToken,
    SEND_LIMIT_PER_MINUTE: "100000",
    EDIT_LIMIT_PER_MINUTE: "100000",
    WEBHOOK_URL: receiver.url,
    WEBHOOK_SECRET: webhookSecret,
    // Short waits, so that the soak's faults are retried within its run; a hang gives up after 1 s.
    WEBHOOK_RETRY_MIN_MS: "200",
    WEBHOOK_RETRY_MAX_MS: "2000",
    WEBHOOK_TIMEOUT_MS: "1000",
    NOTIFY_UNREAD_AFTER_S: "5",
    // Deliveries go while users chat, so that the receiver's faults meet them under way: with the default the
    // sender would step aside for the soak's load (yielding has tests of its own).
    WEBHOOK_YIELD_MAX_S: "0",
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
      const user: SoakUser = { id, restricted: i % 4 === 3, client: undefined!, received: [], chats: [], own: [] };
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
    // Edits, deletes and reads over REST: one that fails under a fault may or may not have been stored, and
    // the webhook check reads what was from the database, so these are counted, not problems.
    const actions = { edits: 0, deletes: 0, reads: 0, failed: 0 };
    const other = async (user: SoakUser, chatId: number, n: number, dice: number) => {
      try {
        if (dice < 0.1 && user.own.length > 0) {
          await user.client.api.editMessage(user.own[Math.floor(Math.random() * user.own.length)]!, `edit ${n}`);
          actions.edits++;
        } else if (dice < 0.15 && user.own.length > 0) {
          await user.client.api.deleteMessage(user.own.splice(Math.floor(Math.random() * user.own.length), 1)[0]!);
          actions.deletes++;
        } else {
          const latest = user.received.findLast((e) => e.type === "new_message" && e.chat_id === chatId);
          if (latest?.type !== "new_message") return false;
          await user.client.markRead(chatId, latest.message.id);
          actions.reads++;
        }
      } catch {
        actions.failed++;
      }
      return true;
    };
    let sending = true;
    const senders = users.map(async (user) => {
      for (let n = 0; sending; n++) {
        await sleep(200 + Math.random() * 800);
        if (!sending) break;
        const chatId = user.chats[Math.floor(Math.random() * user.chats.length)]!;
        const dice = Math.random();
        if (dice < 0.3 && (await other(user, chatId, n, dice))) continue;
        try {
          const message = await user.client.send(chatId, `user ${user.id} message ${n}`);
          acked.push({ messageId: message.id, users: participants.get(chatId)! });
          user.own.push(message.id);
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
    // The receiver misbehaves between the other faults: 500 for 3 s, then it hangs for 3 s.
    const receiverFaults = (async () => {
      await at(0.35);
      log("webhook receiver answers 500 for 3 s");
      receiver.behaviour = "fail";
      await sleep(3_000);
      receiver.behaviour = "ok";
      await at(0.62);
      log("webhook receiver hangs for 3 s");
      receiver.behaviour = "hang";
      await sleep(3_000);
      receiver.behaviour = "ok";
      log("webhook receiver answers again");
    })();

    await sleep(ms);
    sending = false;
    await chaos;
    await receiverFaults;
    await dropper;
    log(
      `sending stopped: ${acked.length} messages acknowledged, ${actions.edits} edits, ${actions.deletes} deletes, ` +
        `${actions.reads} reads (${actions.failed} failed), ${drops} sockets dropped; waiting for the sends in flight`,
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
    // A message event is read from the message as it is now (edited, deleted): a client that got it before the
    // change has it as it was. So the message of an edited or deleted one is compared by its id alone. Keys are
    // compared in one order: a stored payload (jsonb) has its keys in another order than the frame had.
    const changed = new Set(
      [...stored.values()].flatMap((events) =>
        events.flatMap((e) => (e.type === "message_edited" || e.type === "message_deleted" ? [e.message.id] : [])),
      ),
    );
    const sortedKeys = (_: string, value: unknown) =>
      value && typeof value === "object" && !Array.isArray(value)
        ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
        : value;
    const comparableEvent = (e: ChatEvent) =>
      JSON.stringify(
        "message" in e && changed.has(e.message.id) ? { ...e, message: { id: e.message.id } } : e,
        sortedKeys,
      );
    const comparable = (events: ChatEvent[]) => events.map(comparableEvent);
    for (const user of users) {
      const events = stored.get(user.id)!;
      const dense = events.every((e, i) => e.event_id === i + 1);
      if (!dense) problems.push(`user ${user.id}: the stored stream is not 1, 2, 3 …`);
      const received = comparable(user.received);
      const storedOnes = comparable(events);
      const first = received.findIndex((e, i) => e !== storedOnes[i]);
      if (first >= 0 || received.length !== storedOnes.length) {
        const ids = user.received.map((e) => e.event_id);
        problems.push(
          `user ${user.id} (${user.client.mode}): received ${ids.length} events (last ${ids.at(-1)}), stored ${events.length}` +
            (ids.some((id, i) => id !== i + 1) ? `; out of order or repeated: ${ids.join(",")}` : "") +
            (first >= 0 ? `; first difference: received ${received[first]}, stored ${storedOnes[first]}` : ""),
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
    const webhooks = await checkWebhooks(url, receiver, problems);
    const events = [...stored.values()].reduce((n, e) => n + e.length, 0);
    const modes: Record<string, number> = {};
    for (const user of users) modes[user.client.mode] = (modes[user.client.mode] ?? 0) + 1;
    console.log(
      JSON.stringify({
        seconds,
        users: users.length,
        acked: acked.length,
        ...actions,
        changedMessages: changed.size,
        eventsChecked: events,
        drops,
        modes,
        webhooks,
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
    await receiver.close();
  }
}

/** A webhook's body as sent (CONTRACT §9); `data` only in the fields the soak checks. */
interface WebhookBody {
  type: string;
  timestamp: string;
  data: {
    message?: { id: number; chat_id?: number };
    chat?: { id: number };
    chat_id?: number;
    user_id?: number;
    message_id?: number;
    last_message?: { id: number } | null;
  };
}

/**
 * Waits (60 s at most) until no webhook is pending, then compares what reached the receiver with the database:
 * each message → `message.created`, each edited one → `message.updated`, each deleted one → `message.deleted`,
 * each chat → `chat.created`, each read marker → a `message.read` of that user and chat up to its message;
 * and back: each request names a change the database holds. A webhook-id seen twice has the same body each
 * time, and no change is reported under two webhook-ids. Pushes what is off onto `problems`; returns counts.
 */
async function checkWebhooks(url: string, receiver: WebhookReceiver, problems: string[]) {
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const waitedFrom = performance.now();
    const count = async (where: string) =>
      Number(
        (await db.query<{ n: string }>(`select count(*)::text as n from webhook_deliveries where ${where}`)).rows[0]!.n,
      );
    let pending = await count("next_attempt_at is not null");
    while (pending > 0 && performance.now() - waitedFrom < 60_000) {
      await sleep(200);
      pending = await count("next_attempt_at is not null");
    }
    const drainSeconds = Number(((performance.now() - waitedFrom) / 1000).toFixed(1));
    log(`webhooks: ${pending} pending after ${drainSeconds} s`);
    if (pending > 0) problems.push(`webhooks: ${pending} deliveries still pending after 60 s`);
    const dead = await count("dead_at is not null");
    if (dead > 0) problems.push(`webhooks: ${dead} deliveries dead`);

    // The database first, then what was received (a change the receiver has is stored by then).
    const messages = (
      await db.query<{ id: string; chat_id: string; edited: boolean; deleted: boolean }>(
        "select id::text, chat_id::text, edited_at is not null as edited, deleted_at is not null as deleted from messages",
      )
    ).rows.map((m) => ({ id: Number(m.id), chatId: Number(m.chat_id), edited: m.edited, deleted: m.deleted }));
    const chatIds = new Set(
      (await db.query<{ id: string }>("select id::text from chats")).rows.map((c) => Number(c.id)),
    );
    const markers = new Map(
      (
        await db.query<{ chat_id: string; user_id: string; last: string | null }>(
          "select chat_id::text, user_id::text, last_read_message_id::text as last from chat_participants",
        )
      ).rows.map((p) => [`${p.chat_id}/${p.user_id}`, p.last === null ? null : Number(p.last)]),
    );
    const received = [...receiver.received];
    const byMessage = new Map(messages.map((m) => [m.id, m]));

    let badSignatures = 0;
    const bodyOf = new Map<string, string>();
    const delivered = new Map<string, WebhookBody>();
    const idsOf = new Map<string, Set<string>>();
    let duplicates = 0;
    for (const request of received) {
      if (request.verified !== "yes") badSignatures++;
      const body = bodyOf.get(request.webhookId);
      if (body === undefined) bodyOf.set(request.webhookId, request.body);
      else {
        duplicates++;
        if (body !== request.body) problems.push(`webhooks: ${request.webhookId} came with two different bodies`);
      }
      if (request.status === 204) delivered.set(request.webhookId, JSON.parse(request.body) as WebhookBody);
    }
    if (badSignatures > 0) problems.push(`webhooks: ${badSignatures} requests failed the signature check`);

    // Back: everything received names a change the database holds.
    const reported = new Map<string, number>();
    const note = (key: string) => reported.set(key, (reported.get(key) ?? 0) + 1);
    for (const [webhookId, body] of [...bodyOf].map(([id, text]) => [id, JSON.parse(text) as WebhookBody] as const)) {
      const { type, data } = body;
      const named = `${webhookId} (${type})`;
      const sameChange = (key: string) => {
        const ids = idsOf.get(key) ?? new Set<string>();
        ids.add(webhookId);
        idsOf.set(key, ids);
      };
      if (type === "message.created" || type === "message.updated" || type === "message.deleted") {
        const message = byMessage.get(data.message?.id ?? 0);
        if (!message) problems.push(`webhooks: ${named} reports message ${data.message?.id}, not in the database`);
        else if (type === "message.updated" && !message.edited)
          problems.push(`webhooks: ${named}: message ${message.id} was never edited`);
        else if (type === "message.deleted" && !message.deleted)
          problems.push(`webhooks: ${named}: message ${message.id} is not deleted`);
        if (type !== "message.updated") sameChange(`${type} ${data.message?.id}`);
      } else if (type === "chat.created") {
        if (!chatIds.has(data.chat?.id ?? 0)) problems.push(`webhooks: ${named}: chat ${data.chat?.id} is not stored`);
        sameChange(`${type} ${data.chat?.id}`);
      } else if (type === "message.read") {
        const marker = markers.get(`${data.chat_id}/${data.user_id}`);
        if (marker === undefined || marker === null || marker < (data.message_id ?? 0))
          problems.push(`webhooks: ${named}: user ${data.user_id} read chat ${data.chat_id} only to ${marker}`);
      } else if (type === "notification.unread") {
        const last = byMessage.get(data.last_message?.id ?? 0);
        if (!markers.has(`${data.chat_id}/${data.user_id}`) || last?.chatId !== data.chat_id)
          problems.push(`webhooks: ${named}: no such chat, user or last message`);
      } else problems.push(`webhooks: ${named}: a type the soak never causes`);
      note(type);
    }
    for (const [change, ids] of idsOf)
      if (ids.size > 1) problems.push(`webhooks: ${change} reported under ${[...ids].join(", ")}`);

    // Forth: every change the webhooks report reached the receiver, answered 2xx.
    const got = (type: string, test: (data: WebhookBody["data"]) => boolean) =>
      [...delivered.values()].some((b) => b.type === type && test(b.data));
    const index = (type: string, key: (data: WebhookBody["data"]) => unknown) =>
      new Set([...delivered.values()].filter((b) => b.type === type).map((b) => key(b.data)));
    const created = index("message.created", (d) => d.message?.id);
    const updated = index("message.updated", (d) => d.message?.id);
    const deleted = index("message.deleted", (d) => d.message?.id);
    const chatsCreated = index("chat.created", (d) => d.chat?.id);
    const missing: string[] = [];
    for (const m of messages) {
      if (!created.has(m.id)) missing.push(`message.created ${m.id}`);
      if (m.edited && !updated.has(m.id)) missing.push(`message.updated ${m.id}`);
      if (m.deleted && !deleted.has(m.id)) missing.push(`message.deleted ${m.id}`);
    }
    for (const id of chatIds) if (!chatsCreated.has(id)) missing.push(`chat.created ${id}`);
    let readMarkers = 0;
    for (const [key, last] of markers) {
      if (last === null) continue;
      readMarkers++;
      const [chatId, userId] = key.split("/").map(Number);
      if (!got("message.read", (d) => d.chat_id === chatId && d.user_id === userId && d.message_id === last))
        missing.push(`message.read chat ${chatId} user ${userId} to ${last}`);
    }
    if (missing.length > 0)
      problems.push(
        `webhooks: ${missing.length} changes never reached the receiver: ${missing.slice(0, 20).join(", ")}`,
      );
    return {
      drainSeconds,
      requests: received.length,
      distinctIds: bodyOf.size,
      repeated: duplicates,
      byType: Object.fromEntries(reported),
      stored: {
        messages: messages.length,
        edited: messages.filter((m) => m.edited).length,
        deleted: messages.filter((m) => m.deleted).length,
        chats: chatIds.size,
        readMarkers,
      },
      missing: missing.length,
    };
  } finally {
    await db.end();
  }
}

const passed = await withDatabase(soak, "lc_soak");
console.log(passed ? "soak passed" : "soak FAILED");
process.exit(passed ? 0 : 1);
