/**
 * The sender (src/webhooks/sender.ts) against a real HTTP receiver and PostgreSQL (or PGlite), without a chat
 * process: what a receiver's odd answers do to the queue. An error page with a NUL byte (PostgreSQL text holds
 * none), credentials in WEBHOOK_URL, a stop while the receiver hangs (those attempts go back untried, not as
 * failures), and the breaker: a receiver that fails is probed, not flooded, and gets the backlog when it answers.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { DevDefaults } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import pino from "pino";
import { Webhook } from "standardwebhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type DatabaseHandle, openDatabase } from "../src/db/client.ts";
import type { WebhookMetrics } from "../src/webhooks/metrics.ts";
import type { WebhookOptions } from "../src/webhooks/options.ts";
import { createWebhookSender } from "../src/webhooks/sender.ts";
import { createYieldPolicy } from "../src/webhooks/yielding.ts";
import { databaseTargets } from "./support/databases.ts";

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

async function startReceiver(handler: { current: Handler }): Promise<{ server: Server; url: string; port: number }> {
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
    });
    req.on("end", () => handler.current(req, body, res));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return { server, port, url: `http://127.0.0.1:${port}/hooks` };
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const counting = () => {
  const seen = { delivered: 0, failed: 0, dead: 0 };
  const metrics: WebhookMetrics = {
    delivered: () => {
      seen.delivered += 1;
    },
    failed: () => {
      seen.failed += 1;
    },
    dead: (n) => {
      seen.dead += n;
    },
    yielding: () => {},
  };
  return { seen, metrics };
};

describe.each(databaseTargets())("webhook sender on $name", (target) => {
  let handle: DatabaseHandle;
  let drop: () => Promise<void>;
  const handler: { current: Handler } = { current: (_req, _body, res) => res.writeHead(204).end() };
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  const verifier = new Webhook(DevDefaults.webhookSecret);
  const log = pino({ level: "silent" });

  const options = (overrides: Partial<WebhookOptions> = {}): WebhookOptions => ({
    url: receiver.url,
    secret: DevDefaults.webhookSecret,
    timeoutMs: 1_000,
    maxAgeS: 3_600,
    notifyUnreadAfterS: 60,
    concurrency: 4,
    retryMinMs: 100,
    retryMaxMs: 400,
    pollMs: 50,
    keepDeliveredS: 3_600,
    yieldMaxS: 0,
    ...overrides,
  });

  const query = async <T>(text: ReturnType<typeof sql>): Promise<T[]> =>
    ((await handle.db.execute(text)) as unknown as { rows: T[] }).rows;

  async function record(count: number): Promise<number[]> {
    const rows = await query<{ id: string | number }>(sql`
      insert into webhook_deliveries (type, data)
      select 'message.created', jsonb_build_object('n', g) from generate_series(1, ${count}) g returning id`);
    return rows.map((r) => Number(r.id));
  }

  const stateOf = (id: number) =>
    query<{ delivered: boolean; dead: boolean; attempts: number; last_error: string | null; due_now: boolean }>(sql`
      select delivered_at is not null as delivered, dead_at is not null as dead, attempts, last_error,
        next_attempt_at <= now() as due_now
      from webhook_deliveries where id = ${id}`).then((rows) => rows[0]!);

  beforeAll(async () => {
    const created = await target.create();
    drop = created.drop;
    handle = await openDatabase(created.options);
    receiver = await startReceiver(handler);
  });
  afterAll(async () => {
    receiver?.server.closeAllConnections();
    await new Promise((resolve) => receiver?.server.close(resolve));
    await handle?.close();
    await drop?.();
  });

  it("keeps going when an error page holds a NUL byte, and retries that delivery", async () => {
    await handle.db.execute(sql`delete from webhook_deliveries`);
    const received = new Map<string, number>();
    let refusedOnce = false;
    const ids = await record(20);
    const poisoned = `msg_${ids[3]}`;
    handler.current = (req, body, res) => {
      verifier.verify(body, req.headers as Record<string, string>);
      const id = String(req.headers["webhook-id"]);
      if (id === poisoned && !refusedOnce) {
        refusedOnce = true;
        res.writeHead(500, { "content-type": "text/plain" }).end("broken\u0000page\u0001");
        return;
      }
      received.set(id, (received.get(id) ?? 0) + 1);
      res.writeHead(204).end();
    };
    const { seen, metrics } = counting();
    const sender = createWebhookSender({ db: handle.db, options: options(), log, metrics });
    sender.start();
    try {
      await until("every delivery", async () => ids.every((id) => received.has(`msg_${id}`)));
      expect(refusedOnce).toBe(true);
      const state = await until("the retried row settled", async () => {
        const s = await stateOf(ids[3]!);
        return s.delivered ? s : undefined;
      });
      expect(state).toMatchObject({ attempts: 2, last_error: "HTTP 500: broken page" });
      expect(seen).toMatchObject({ delivered: 20, failed: 1, dead: 0 });
    } finally {
      await sender.stop();
    }
  });

  it("sends WEBHOOK_URL's credentials as Basic authorization", async () => {
    await handle.db.execute(sql`delete from webhook_deliveries`);
    const [id] = await record(1);
    const seenAuthorization: Array<string | undefined> = [];
    handler.current = (req, _body, res) => {
      seenAuthorization.push(req.headers.authorization);
      res.writeHead(req.headers.authorization === `Basic ${btoa("chat:s3cr:et")}` ? 204 : 401).end();
    };
    const url = `http://chat:s3cr%3Aet@127.0.0.1:${receiver.port}/hooks`;
    const sender = createWebhookSender({ db: handle.db, options: options({ url }), log, metrics: counting().metrics });
    sender.start();
    try {
      await until("delivered", async () => (await stateOf(id!)).delivered);
      expect(seenAuthorization).toEqual([`Basic ${btoa("chat:s3cr:et")}`]);
    } finally {
      await sender.stop();
    }
  });

  it("gives back what it was sending when it stops, as never tried, within its grace", async () => {
    await handle.db.execute(sql`delete from webhook_deliveries`);
    const ids = await record(3);
    const hung: ServerResponse[] = [];
    handler.current = (_req, _body, res) => {
      hung.push(res);
    };
    const { seen, metrics } = counting();
    const sender = createWebhookSender({ db: handle.db, options: options({ timeoutMs: 30_000 }), log, metrics });
    sender.start();
    await until("three attempts in flight", async () => hung.length === 3);
    const started = Date.now();
    await sender.stop();
    // STOP_GRACE_MS (2 s) for the attempts in flight, then at most a second for the database.
    expect(Date.now() - started).toBeLessThan(3_500);
    for (const id of ids) {
      expect(await stateOf(id)).toMatchObject({
        delivered: false,
        dead: false,
        attempts: 0,
        due_now: true,
        last_error: null,
      });
    }
    expect(seen).toMatchObject({ delivered: 0, failed: 0 });
    for (const res of hung) res.destroy();
  });

  it("probes a failing receiver instead of flooding it, then sends the backlog", async () => {
    await handle.db.execute(sql`delete from webhook_deliveries`);
    const ids = await record(200);
    let down = true;
    let requestsWhileDown = 0;
    const received = new Set<string>();
    handler.current = (req, _body, res) => {
      if (down) {
        requestsWhileDown++;
        res.writeHead(503).end("maintenance");
        return;
      }
      received.add(String(req.headers["webhook-id"]));
      res.writeHead(204).end();
    };
    const { metrics } = counting();
    const sender = createWebhookSender({
      db: handle.db,
      options: options({ retryMinMs: 200, retryMaxMs: 400 }),
      log,
      metrics,
    });
    sender.start();
    try {
      await until("the breaker", async () => sender.isProbing());
      const atOpen = requestsWhileDown;
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      // Two seconds of probes 100–400 ms apart: a handful of requests, not the 200 rows again and again.
      const probes = requestsWhileDown - atOpen;
      expect(probes).toBeGreaterThan(2);
      expect(probes).toBeLessThan(25);
      expect(atOpen).toBeLessThan(5 + 2 * 4);
      down = false;
      await until("every delivery after the receiver came back", async () =>
        ids.every((id) => received.has(`msg_${id}`)),
      );
      expect(sender.isProbing()).toBe(false);
    } finally {
      await sender.stop();
    }
  });

  /** An unread reminder as lc_notify_unread records it: due at `-infinity`, the head of the queue. */
  async function recordReminder(): Promise<string> {
    const [row] = await query<{ id: string | number }>(sql`
      insert into webhook_deliveries (type, data, next_attempt_at)
      values ('notification.unread', '{}'::jsonb, '-infinity') returning id`);
    return `msg_${row!.id}`;
  }

  /** A sender whose CPU pressure is `share()` while users keep coming (every look finds new traffic). */
  function yieldingSender(share: () => number, maxS: number) {
    let traffic = 0;
    const yieldPolicy = createYieldPolicy({ pressure: { stalledShare: share }, activity: () => traffic++, maxS });
    const sender = createWebhookSender({
      db: handle.db,
      options: options(),
      log,
      metrics: counting().metrics,
      yieldPolicy,
    });
    return { sender, yieldPolicy };
  }

  it("while the CPU is short sends the new reminders only, and the rest once it is not", async () => {
    await handle.db.execute(sql`delete from webhook_deliveries`);
    const received: string[] = [];
    handler.current = (req, _body, res) => {
      received.push(String(req.headers["webhook-id"]));
      res.writeHead(204).end();
    };
    const pressure = { share: 0.9 };
    const { sender, yieldPolicy } = yieldingSender(() => pressure.share, 3_600);
    const ids = await record(40);
    const reminder = await recordReminder();
    sender.start();
    try {
      await until("the reminder", async () => received.includes(reminder));
      // Several polls (50 ms) and rechecks (250 ms) later, still only the reminder.
      await new Promise((resolve) => setTimeout(resolve, 800));
      expect(received).toEqual([reminder]);
      expect(yieldPolicy.isYielding()).toBe(true);
      // Another reminder recorded meanwhile goes too.
      const second = await recordReminder();
      sender.wake();
      await until("the second reminder", async () => received.includes(second));
      expect(received).toHaveLength(2);
      pressure.share = 0.1;
      await until("the 40 held back", async () => ids.every((id) => received.includes(`msg_${id}`)));
      expect(received).toHaveLength(42);
      expect(yieldPolicy.isYielding()).toBe(false);
    } finally {
      await sender.stop();
    }
  });

  it("holds deliveries back at most WEBHOOK_YIELD_MAX_S, however long the CPU stays short", async () => {
    await handle.db.execute(sql`delete from webhook_deliveries`);
    const received = new Set<string>();
    handler.current = (req, _body, res) => {
      received.add(String(req.headers["webhook-id"]));
      res.writeHead(204).end();
    };
    const ids = await record(30);
    const started = Date.now();
    const { sender } = yieldingSender(() => 1, 1);
    sender.start();
    try {
      await until("every delivery", async () => ids.every((id) => received.has(`msg_${id}`)));
      const waited = Date.now() - started;
      // Held back for the second, then sent though the pressure never fell.
      expect(waited).toBeGreaterThanOrEqual(1_000);
      expect(waited).toBeLessThan(5_000);
      // Once the queue ran dry, a new wait begins: the next ones are held back again.
      const later = await record(5);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(later.some((id) => received.has(`msg_${id}`))).toBe(false);
      await until("the later ones, after their own wait", async () => later.every((id) => received.has(`msg_${id}`)));
    } finally {
      await sender.stop();
    }
  });
});
