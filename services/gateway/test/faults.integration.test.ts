/**
 * Per-user streams under faults, with real processes: two listings-chat instances on one PostgreSQL and one
 * Redis, users chatting through both, while one instance is frozen (SIGSTOP), killed (SIGKILL) and has its
 * database connections terminated. The other instance's writes never wait for the frozen one, and at the
 * end every acknowledged message is in both participants' streams exactly once, and every socket (which
 * reconnects and resumes from its cursor) received its user's stream exactly, in order.
 */
import { randomUUID } from "node:crypto";
import type { ChatEvent } from "@listings-chat/shared";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import { redisNamespace, redisTargets } from "../../listings-chat/test/support/redis.ts";
import { pollUntil, randomSecret, sleep } from "./support/e2e.ts";
import { type RedisProcess, type ServiceProcess, startChatProcess, startRedisProcess } from "./support/processes.ts";

const postgres = databaseTargets().find((t) => t.name === "postgres");
const internalToken = randomSecret();
const headersOf = (userId: number) => ({ "x-internal-token": internalToken, "x-user-id": String(userId) });

/** A user's socket that records the events it gets and, when it drops, resumes from its cursor elsewhere. */
class Follower {
  readonly events: ChatEvent[] = [];
  /** Events that came twice or out of order: must stay empty. */
  readonly anomalies: string[] = [];
  private socket: WebSocket | undefined;
  private stopped = false;
  readonly userId: number;
  private readonly pick: () => ServiceProcess;

  constructor(userId: number, pick: () => ServiceProcess) {
    this.userId = userId;
    this.pick = pick;
  }

  get last(): number {
    return this.events.at(-1)?.event_id ?? 0;
  }

  connect(): void {
    if (this.stopped) return;
    const ws = new WebSocket(`ws://127.0.0.1:${this.pick().port}/ws/chat?after=${this.last}`, {
      headers: headersOf(this.userId),
    });
    this.socket = ws;
    ws.on("error", () => {});
    ws.on("message", (data) => {
      const frame = JSON.parse(String(data)) as { type: string; event_id?: number };
      if (frame.event_id === undefined) return;
      if (frame.event_id !== this.last + 1) {
        this.anomalies.push(`user ${this.userId}: got ${frame.event_id} after ${this.last}`);
        if (frame.event_id <= this.last) return;
      }
      this.events.push(frame as ChatEvent);
    });
    ws.on("close", () => {
      if (this.socket === ws) setTimeout(() => this.connect(), 100);
    });
  }

  stop(): void {
    this.stopped = true;
    this.socket?.terminate();
  }
}

interface Acked {
  messageId: number;
  chatId: number;
  users: [number, number];
}

/** A call to an instance's REST API as `userId` on the internal hop. */
async function api(instance: ServiceProcess, userId: number, method: string, path: string, body?: unknown) {
  const res = await fetch(`${instance.baseUrl}${path}`, {
    method,
    headers: { ...headersOf(userId), "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  return { status: res.status, body: (await res.json()) as any };
}

/** A user's whole stream as stored, page by page, and its end. */
async function storedStream(instance: ServiceProcess, userId: number) {
  const events: ChatEvent[] = [];
  for (let after = 0; ; ) {
    const page = (await api(instance, userId, "GET", `/api/v1/events?after=${after}&limit=500`)).body as {
      events: ChatEvent[];
      last_event_id: number;
      has_more: boolean;
    };
    events.push(...page.events);
    if (!page.has_more) return { events, last_event_id: page.last_event_id };
    after = page.last_event_id;
  }
}

/**
 * 16 pairs of users chatting through two instances: pairs 0–7 send through the first, 8–15 through the
 * second (no user is written by both), each user's socket on either instance and resuming from its cursor
 * when it drops. The test drives faults meanwhile, then stops the senders and checks what was stored.
 */
async function startChatter(instances: [ServiceProcess, ServiceProcess], firstUser: number) {
  const [one, two] = instances;
  const pairs = Array.from({ length: 16 }, (_, i) => [firstUser + 2 * i, firstUser + 1 + 2 * i] as [number, number]);
  const chatIds = await Promise.all(
    pairs.map(async ([buyer, seller], i) => {
      const res = await api(one, buyer, "POST", "/api/v1/chats", { listing_id: i + 1, seller_id: seller });
      expect(res.status).toBe(201);
      return res.body.id as number;
    }),
  );
  const state = {
    alive: [one, two],
    route: (i: number) => (i < 8 ? one : two),
    sending: true,
  };
  const followers = pairs.flat().map((userId, i) => new Follower(userId, () => state.alive[i % state.alive.length]!));
  for (const follower of followers) follower.connect();
  await pollUntil(() => followers.every((f) => f.last >= 1), 10_000);

  const acked: Acked[] = [];
  const latenciesOnTwo: Array<{ at: number; ms: number }> = [];
  const senders = pairs.map(async ([buyer, seller], i) => {
    for (let n = 0; state.sending; n++) {
      const from = n % 2 ? seller : buyer;
      const instance = state.route(i);
      const started = Date.now();
      try {
        const res = await api(instance, from, "POST", `/api/v1/chats/${chatIds[i]}/messages`, {
          content: `pair ${i} message ${n}`,
          client_msg_id: randomUUID(),
        });
        if (res.status === 201) {
          acked.push({ messageId: res.body.id, chatId: chatIds[i]!, users: [buyer, seller] });
          if (instance === two) latenciesOnTwo.push({ at: started, ms: Date.now() - started });
        } else await sleep(50);
      } catch {
        // A send to an instance that died or hung: not acknowledged, so not counted; the loop goes on.
        await sleep(50);
      }
    }
  });

  return {
    state,
    acked,
    latenciesOnTwo,
    /** Stops the senders, waits for every socket to catch up with its stream, and checks everything. */
    async finish(reader: ServiceProcess) {
      state.sending = false;
      await Promise.all(senders);
      expect(acked.length).toBeGreaterThan(100);
      const ends = new Map<number, number>();
      for (const follower of followers)
        ends.set(follower.userId, (await storedStream(reader, follower.userId)).last_event_id);
      const caughtUp = await pollUntil(() => followers.every((f) => f.last === ends.get(f.userId)), 15_000, 100);
      for (const follower of followers) follower.stop();
      expect(
        caughtUp,
        followers
          .filter((f) => f.last !== ends.get(f.userId))
          .map((f) => `user ${f.userId} at ${f.last} of ${ends.get(f.userId)}`)
          .join(", "),
      ).toBe(true);
      const inStream = new Map<number, number[]>();
      for (const follower of followers) {
        expect(follower.anomalies).toEqual([]);
        const stored = (await storedStream(reader, follower.userId)).events;
        // Dense, and what the socket received is the stored stream exactly.
        expect(stored.map((e) => e.event_id)).toEqual(Array.from({ length: stored.length }, (_, i) => i + 1));
        expect(follower.events).toEqual(stored);
        inStream.set(
          follower.userId,
          stored.flatMap((e) => (e.type === "new_message" ? [e.message.id] : [])),
        );
      }
      // Every acknowledged message is in both participants' streams, exactly once.
      for (const { messageId, users } of acked) {
        for (const user of users) {
          expect(
            inStream.get(user)!.filter((id) => id === messageId),
            `message ${messageId} for user ${user}`,
          ).toHaveLength(1);
        }
      }
    },
  };
}

/** A fresh database and two chat instances on it and on `redis` (under a key prefix of their own). */
function twoInstances(redis: () => string) {
  const env = { dropDatabase: async () => {}, dropRedis: async () => {}, databaseUrl: "" };
  const instances: ServiceProcess[] = [];
  beforeAll(async () => {
    const db = await postgres!.create();
    env.dropDatabase = db.drop;
    if (!("url" in db.options)) throw new Error("the PostgreSQL target has a URL");
    env.databaseUrl = db.options.url;
    const ns = redisNamespace(redis());
    env.dropRedis = ns.drop;
    const vars = {
      INTERNAL_TOKEN: internalToken,
      DATABASE_URL: env.databaseUrl,
      REDIS_URL: redis(),
      REDIS_KEY_PREFIX: ns.keyPrefix,
      SEND_LIMIT_PER_MINUTE: "1000000",
    };
    instances.push(
      ...(await Promise.all([
        startChatProcess({ ...vars, INSTANCE_ID: "one" }),
        startChatProcess({ ...vars, INSTANCE_ID: "two" }),
      ])),
    );
  }, 60_000);
  afterAll(async () => {
    for (const instance of instances) {
      instance.child.kill("SIGCONT");
      await instance.stop("SIGKILL");
    }
    await env.dropRedis().catch(() => {});
    await env.dropDatabase();
  });
  return { env, pair: () => instances as [ServiceProcess, ServiceProcess] };
}

describe.runIf(postgres).each(redisTargets())(
  "per-user streams under faults (two instances, real processes, $name)",
  (target) => {
    const { env, pair } = twoInstances(() => target.url);

    it("keeps writes going past a frozen instance, and loses or repeats nothing across freeze, kill and terminated connections", async () => {
      const [one, two] = pair();
      const chatter = await startChatter([one, two], 30_000);

      // 1. Freeze instance one for 10 s in the middle of its writes.
      await sleep(1_500);
      const frozenAt = Date.now();
      one.child.kill("SIGSTOP");
      await sleep(10_000);
      one.child.kill("SIGCONT");
      const thawedAt = Date.now();
      await sleep(1_000);

      // 2. Kill instance one outright; its senders move to instance two, its sockets resume there.
      one.child.kill("SIGKILL");
      chatter.state.alive = [two];
      chatter.state.route = () => two;
      await sleep(1_500);

      // 3. Terminate instance two's database connections mid-burst; its pool opens new ones.
      const admin = new pg.Client({ connectionString: env.databaseUrl });
      await admin.connect();
      await admin.query(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
      );
      await admin.end();
      await sleep(1_500);

      await chatter.finish(two);
      // Instance two never waited for the frozen one: its sends during the freeze were as quick as ever.
      const duringFreeze = chatter.latenciesOnTwo
        .filter((l) => l.at >= frozenAt && l.at + l.ms <= thawedAt)
        .map((l) => l.ms)
        .sort((a, b) => a - b);
      expect(duringFreeze.length).toBeGreaterThan(20);
      const p99 = duringFreeze[Math.floor(duringFreeze.length * 0.99)]!;
      expect(p99, `p99 of instance two's sends while one was frozen: ${p99} ms`).toBeLessThan(200);
    }, 90_000);
  },
);

// A Redis of this test's own: it is killed and started again, which the shared one must never be.
describe.runIf(postgres)("per-user streams across a Redis restart (two instances, real processes)", () => {
  let redis: RedisProcess | undefined;
  beforeAll(async () => {
    redis = await startRedisProcess();
  });
  afterAll(() => {
    redis?.kill();
  });
  const { pair } = twoInstances(() => redis!.url);

  it("loses or repeats nothing when Redis is killed and comes back mid-burst", async () => {
    const [one, two] = pair();
    const chatter = await startChatter([one, two], 40_000);
    await sleep(1_500);
    await redis!.restart(1_500);
    expect(await redis!.answers()).toBe(true);
    await sleep(3_000);
    await chatter.finish(two);
  }, 90_000);
});
