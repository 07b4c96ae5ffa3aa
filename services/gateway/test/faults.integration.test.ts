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
import { type ServiceProcess, startChatProcess } from "./support/processes.ts";

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

  constructor(
    readonly userId: number,
    private readonly pick: () => ServiceProcess,
  ) {}

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

describe.runIf(postgres).each(redisTargets())(
  "per-user streams under faults (two instances, real processes, $name)",
  (target) => {
    const redis = target.url;
    let dropDatabase: () => Promise<void> = async () => {};
    let dropRedis: () => Promise<void> = async () => {};
    let databaseUrl: string;
    let one: ServiceProcess;
    let two: ServiceProcess;

    beforeAll(async () => {
      const db = await postgres!.create();
      dropDatabase = db.drop;
      if (!("url" in db.options)) throw new Error("the PostgreSQL target has a URL");
      databaseUrl = db.options.url;
      const ns = redisNamespace(redis);
      dropRedis = ns.drop;
      const env = {
        INTERNAL_TOKEN: internalToken,
        DATABASE_URL: databaseUrl,
        REDIS_URL: redis,
        REDIS_KEY_PREFIX: ns.keyPrefix,
        SEND_LIMIT_PER_MINUTE: "1000000",
      };
      [one, two] = await Promise.all([
        startChatProcess({ ...env, INSTANCE_ID: "one" }),
        startChatProcess({ ...env, INSTANCE_ID: "two" }),
      ]);
    }, 60_000);

    afterAll(async () => {
      for (const instance of [one, two]) {
        instance?.child.kill("SIGCONT");
        await instance?.stop("SIGKILL");
      }
      await dropRedis();
      await dropDatabase();
    });

    it("keeps writes going past a frozen instance, and loses or repeats nothing across freeze, kill and terminated connections", async () => {
      const pairs = Array.from({ length: 16 }, (_, i) => [30_000 + 2 * i, 30_001 + 2 * i] as [number, number]);
      const api = async (instance: ServiceProcess, userId: number, method: string, path: string, body?: unknown) => {
        const res = await fetch(`${instance.baseUrl}${path}`, {
          method,
          headers: { ...headersOf(userId), "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(15_000),
        });
        return { status: res.status, body: (await res.json()) as any };
      };
      const chatIds = await Promise.all(
        pairs.map(async ([buyer, seller], i) => {
          const res = await api(one, buyer, "POST", "/api/v1/chats", { listing_id: i + 1, seller_id: seller });
          expect(res.status).toBe(201);
          return res.body.id as number;
        }),
      );

      let alive = [one, two];
      const followers = pairs.flat().map((userId, i) => new Follower(userId, () => alive[i % alive.length]!));
      for (const follower of followers) follower.connect();
      await pollUntil(() => followers.every((f) => f.last >= 1), 10_000);

      // Pairs 0–7 send through instance one, 8–15 through instance two: no user is written by both.
      const acked: Acked[] = [];
      const latenciesOnTwo: Array<{ at: number; ms: number }> = [];
      let sending = true;
      let route = (i: number) => (i < 8 ? one : two);
      const senders = pairs.map(async ([buyer, seller], i) => {
        for (let n = 0; sending; n++) {
          const from = n % 2 ? seller : buyer;
          const instance = route(i);
          const started = Date.now();
          try {
            const res = await api(instance, from, "POST", `/api/v1/chats/${chatIds[i]}/messages`, {
              content: `pair ${i} message ${n}`,
              client_msg_id: randomUUID(),
            });
            if (res.status === 201) {
              acked.push({ messageId: res.body.id, chatId: chatIds[i]!, users: [buyer, seller] });
              if (instance === two) latenciesOnTwo.push({ at: started, ms: Date.now() - started });
            }
          } catch {
            // A send to an instance that died: not acknowledged, so not counted; the loop goes on.
            await sleep(50);
          }
        }
      });

      // 1. Freeze instance one for 3 s in the middle of its writes.
      await sleep(1_500);
      const frozenAt = Date.now();
      one.child.kill("SIGSTOP");
      await sleep(3_000);
      one.child.kill("SIGCONT");
      const thawedAt = Date.now();
      await sleep(1_000);

      // 2. Kill instance one outright; its senders move to instance two, its sockets resume there.
      one.child.kill("SIGKILL");
      alive = [two];
      route = () => two;
      await sleep(1_500);

      // 3. Terminate instance two's database connections mid-burst; its pool opens new ones.
      const admin = new pg.Client({ connectionString: databaseUrl });
      await admin.connect();
      await admin.query(
        "select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
      );
      await admin.end();
      await sleep(1_500);

      sending = false;
      await Promise.all(senders);

      // Instance two never waited for the frozen one: its sends during the freeze were as quick as ever.
      const duringFreeze = latenciesOnTwo.filter((l) => l.at >= frozenAt && l.at + l.ms <= thawedAt).map((l) => l.ms);
      expect(duringFreeze.length).toBeGreaterThan(20);
      duringFreeze.sort((a, b) => a - b);
      const p99 = duringFreeze[Math.floor(duringFreeze.length * 0.99)]!;
      expect(p99, `p99 of instance two's sends while one was frozen: ${p99} ms`).toBeLessThan(1_000);
      expect(acked.length).toBeGreaterThan(100);

      // Every socket catches up with its user's stream in the database.
      /** A user's whole stream as stored, page by page, and its end. */
      const stream = async (userId: number) => {
        const events: ChatEvent[] = [];
        for (let after = 0; ; ) {
          const page = (await api(two, userId, "GET", `/api/v1/events?after=${after}&limit=500`)).body as {
            events: ChatEvent[];
            last_event_id: number;
          };
          events.push(...page.events);
          if (page.events.length < 500) return { events, last_event_id: page.last_event_id };
          after = page.last_event_id;
        }
      };
      const ends = new Map<number, number>();
      for (const [buyer, seller] of pairs) {
        for (const user of [buyer, seller]) ends.set(user, (await stream(user)).last_event_id);
      }
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
        const stored = (await stream(follower.userId)).events;
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
    }, 90_000);
  },
);
