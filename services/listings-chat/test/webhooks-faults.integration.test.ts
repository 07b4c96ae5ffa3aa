/**
 * Webhooks (CONTRACT §9) through faults, with real chat processes on PostgreSQL and a real receiver
 * (support/webhook-receiver.ts): a receiver that answers 500, hangs past WEBHOOK_TIMEOUT_MS, destroys the
 * connection, then is down for a minute and comes back; an instance killed with SIGKILL mid-delivery; the
 * database's sessions terminated during sends and deliveries; two instances on one database; deliveries dead
 * after WEBHOOK_MAX_AGE_S, listed and sent again. In every case each recorded change reaches the receiver, and a
 * change sent twice comes with the same webhook-id and the same body. PostgreSQL only: skipped when neither
 * DATABASE_URL nor CI is set; with CI and no DATABASE_URL it fails (databases.ts).
 */
import { randomUUID } from "node:crypto";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { type ChatProcess, metricValue, spawnChat, until } from "./support/chat-process.ts";
import { databaseTargets } from "./support/databases.ts";
import { type Behaviour, startWebhookReceiver, type WebhookReceiver } from "./support/webhook-receiver.ts";

const postgres = databaseTargets().find((t) => t.name === "postgres");

const FAULTS = {
  WEBHOOK_TIMEOUT_MS: "500",
  WEBHOOK_RETRY_MIN_MS: "200",
  WEBHOOK_RETRY_MAX_MS: "2000",
  WEBHOOK_POLL_MS: "100",
  WEBHOOK_CONCURRENCY: "16",
  // Deliveries go at once, whatever else CI runs beside (yielding to a short CPU has tests of its own).
  WEBHOOK_YIELD_MAX_S: "0",
};

const MB = 1024 * 1024;

interface World {
  url: string;
  client: pg.Client;
  receiver: WebhookReceiver;
  chat: ChatProcess;
  token: string;
  env: Record<string, string>;
  /** Another process on the same database, with the same variables (stopped at the test's end). */
  another(): Promise<ChatProcess>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

async function world(extra: Record<string, string> = {}): Promise<World> {
  const created = await postgres!.create();
  cleanups.push(created.drop);
  if (!("url" in created.options)) throw new Error("the PostgreSQL target has a URL");
  const url = created.options.url;
  const receiver = await startWebhookReceiver();
  cleanups.push(() => receiver.close());
  const token = randomUUID();
  const env = { WEBHOOK_URL: receiver.url, WEBHOOK_SECRET: receiver.secret, ...FAULTS, ...extra };
  const another = async () => {
    const chat = await spawnChat({ databaseUrl: url, token, env });
    cleanups.push(() => chat.kill());
    return chat;
  };
  const chat = await another();
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  cleanups.push(() => client.end());
  return { url, client, receiver, chat, token, env, another };
}

async function recordedIds(client: pg.Client): Promise<string[]> {
  const { rows } = await client.query<{ id: string }>("select 'msg_' || id as id from webhook_deliveries order by id");
  return rows.map((r) => r.id);
}

async function openChat(chat: ChatProcess, buyer: number, seller: number, listing: number): Promise<number> {
  const res = await chat.api(buyer, "POST", "/api/v1/chats", { listing_id: listing, seller_id: seller });
  expect([200, 201]).toContain(res.status);
  return res.body.id as number;
}

/** A send; the message's id, or undefined when the service refused or failed it. */
async function trySend(chat: ChatProcess, sender: number, chatId: number, content: string) {
  try {
    const res = await chat.api(sender, "POST", `/api/v1/chats/${chatId}/messages`, {
      content,
      client_msg_id: randomUUID(),
    });
    return res.status === 201 ? (res.body.id as number) : undefined;
  } catch {
    return undefined;
  }
}

async function send(chat: ChatProcess, sender: number, chatId: number, content: string): Promise<number> {
  const id = await trySend(chat, sender, chatId, content);
  if (id === undefined) throw new Error(`a send in chat ${chatId} failed`);
  return id;
}

/**
 * What every fault test ends with: each delivery recorded in the database was acknowledged by the receiver,
 * none is left pending; each message in `messageIds` came as exactly one webhook-id; a webhook-id sent more
 * than once carried the same body each time.
 */
async function everythingArrived(w: World, messageIds: number[], timeoutMs: number) {
  const ids = await recordedIds(w.client);
  await w.receiver.waitForIds(ids, timeoutMs);
  await until(
    async () =>
      (await w.client.query("select count(*)::int as n from webhook_deliveries where delivered_at is null")).rows[0]
        .n === 0,
    10_000,
    "every delivery marked delivered",
    100,
  );
  const idsByMessage = new Map<number, Set<string>>();
  for (const r of w.receiver.received) {
    if (r.type !== "message.created") continue;
    const set = idsByMessage.get(r.data.message.id) ?? new Set();
    set.add(r.webhookId);
    idsByMessage.set(r.data.message.id, set);
  }
  const missing = messageIds.filter((id) => !idsByMessage.has(id));
  expect(missing, "messages never reported").toEqual([]);
  const twice = [...idsByMessage].filter(([, set]) => set.size > 1).map(([id]) => id);
  expect(twice, "messages reported under two webhook-ids").toEqual([]);
  expect(w.receiver.bodyMismatches(), "webhook-ids sent with different bodies").toEqual([]);
  expect(w.receiver.received.filter((r) => !r.verified)).toEqual([]);
  return ids;
}

describe.runIf(postgres)("webhooks through faults", () => {
  it("a receiver that fails, hangs, drops connections, then is down for a minute: every change arrives", async () => {
    const w = await world();
    const { chat, receiver } = w;
    const chatId = await openChat(chat, 101, 102, 201);
    const sent: number[] = [];

    /** Sends while `behaviour` lasts, until `enough` requests met it (the breaker lets a probe through per wait). */
    async function phase(behaviour: Behaviour, enough: number) {
      receiver.behave(behaviour);
      const seen = () => receiver.received.filter((r) => r.behaviour === behaviour).length;
      const before = seen();
      for (let i = 0; i < 10; i++) sent.push(await send(chat, 101, chatId, `${behaviour} ${i}`));
      await receiver.until(() => seen() - before >= enough, 20_000, `${enough} requests answered "${behaviour}"`);
    }

    await phase("fail", 5);
    // Retried with the same webhook-id: some id was tried twice.
    await receiver.until(
      () => receiver.received.some((r) => receiver.attempts(r.webhookId) > 1),
      10_000,
      "a retry of a failed delivery",
    );
    await phase("hang", 3);
    // The sender gave up on each hung request at its timeout (500 ms) and closed the connection.
    const hung = receiver.received.filter((r) => r.behaviour === "hang");
    await receiver.until(
      () => hung.every((r) => r.closedAt !== undefined),
      5_000,
      "the hung requests' connections closed by the sender",
    );
    const heldMs = hung.map((r) => r.closedAt! - r.at);
    console.log(`hung requests closed by the sender after ${heldMs.join(", ")} ms`);
    for (const ms of heldMs) {
      expect(ms).toBeGreaterThanOrEqual(400);
      expect(ms).toBeLessThan(2_000);
    }
    await phase("destroy", 3);

    // 4 writers in 4 chats, for `ms`.
    const writers = await Promise.all([0, 1, 2, 3].map((i) => openChat(chat, 111 + i, 102, 202)));
    let refused = 0;
    const write = (ms: number, tag: string) => {
      const from = Date.now();
      return Promise.all(
        writers.map(async (writerChat, i) => {
          let n = 0;
          while (Date.now() - from < ms) {
            const id = await trySend(chat, 111 + i, writerChat, `${tag} ${n++}`);
            if (id === undefined) refused += 1;
            else sent.push(id);
          }
        }),
      );
    };
    receiver.behave("ok");
    await write(3_000, "up");
    await receiver.waitForIds(await recordedIds(w.client), 30_000);
    const fdsBefore = chat.fds();

    // Down for a minute. 20 s of sends (the write path does not notice), then, the process idle, a backlog of
    // 150 MB put on disk by SQL (50,000 deliveries of 3,000 random characters each, not compressible): its
    // RSS before and after that backlog is compared, with no work of the write path in between to blur it.
    await receiver.down();
    const downAt = Date.now();
    const fdSamples: number[] = [];
    const sampler = setInterval(() => fdSamples.push(chat.fds()), 1_000);
    await write(20_000, "down");
    await until(() => Date.now() - downAt >= 25_000, 10_000, "the process idle a few seconds", 200);
    const rssBefore = chat.rssBytes();
    await w.client.query(
      `insert into webhook_deliveries (type, data)
       select 'test.backlog', jsonb_build_object('n', i, 'pad',
         (select string_agg(md5(random()::text || i || k), '') from generate_series(1, 94) as k))
       from generate_series(1, 50000) as i`,
    );
    const backlog = async () =>
      (await w.client.query("select count(*)::int as n from webhook_deliveries where delivered_at is null")).rows[0]
        .n as number;
    const backlogDown = await backlog();
    const bytes = Number(
      (await w.client.query("select pg_total_relation_size('webhook_deliveries')::bigint as b")).rows[0].b,
    );
    await until(() => Date.now() - downAt >= 60_000, 40_000, "a minute down", 200);
    clearInterval(sampler);
    const fdsDown = chat.fds();
    const rssDown = chat.rssBytes();
    console.log(
      `down a minute: ${sent.length} messages sent in all (${refused} refused), backlog ${backlogDown} ` +
        `(${Math.round(bytes / MB)} MB table); fds ${fdsBefore} before, max ${Math.max(...fdSamples)} ` +
        `during, ${fdsDown} at the end; RSS ${Math.round(rssBefore / MB)} MB before the 50,000, ` +
        `${Math.round(rssDown / MB)} MB at the minute's end`,
    );
    expect(refused, "sends refused while the receiver was down").toBe(0);
    expect(bytes).toBeGreaterThan(150 * MB);
    expect(
      Math.max(...fdSamples, fdsDown) - fdsBefore,
      "file descriptors grew while the receiver was down",
    ).toBeLessThanOrEqual(20);
    // The backlog is on disk: RSS does not grow with it.
    expect(rssDown - rssBefore, "RSS grew with the backlog").toBeLessThan(30 * MB);

    // Back, on the same port: everything arrives, at full speed once the breaker closes.
    const upAt = Date.now();
    let rssPeak = 0;
    const rssSampler = setInterval(() => (rssPeak = Math.max(rssPeak, chat.rssBytes())), 500);
    await receiver.up();
    try {
      await everythingArrived(w, sent, 120_000);
    } finally {
      clearInterval(rssSampler);
    }
    const drainMs = Date.now() - upAt;
    console.log(
      `after a minute down: ${receiver.acked.size} deliveries acknowledged, the backlog drained in ${drainMs} ms ` +
        `(${Math.round(backlogDown / (drainMs / 1000))}/s), ${receiver.received.length - receiver.acked.size} ` +
        `extra requests (failed attempts and duplicates), ${receiver.duplicates().length} duplicates; ` +
        `RSS peak while draining ${Math.round(rssPeak / MB)} MB; fds after ${chat.fds()}`,
    );
    expect(chat.fds() - fdsBefore).toBeLessThanOrEqual(20);
  }, 200_000);

  it("an instance killed with SIGKILL in the middle of deliveries: another delivers the rest, nothing lost", async () => {
    const w = await world();
    const { receiver } = w;
    receiver.behave("ok", { delayMs: 300 });
    const chatId = await openChat(w.chat, 121, 122, 221);
    const sent: number[] = [];
    for (let i = 0; i < 400; i++) sent.push(await send(w.chat, 121, chatId, `before the kill ${i}`));
    await receiver.until(
      () => receiver.acked.size >= 30 && receiver.inFlight() >= 4,
      30_000,
      "deliveries under way (30 acknowledged, 4 in flight)",
    );
    const inFlightAtKill = receiver.inFlight();
    await w.chat.kill();
    const ackedAtKill = receiver.acked.size;
    expect(ackedAtKill, "everything was delivered before the kill").toBeLessThan(401);

    receiver.behave("ok");
    const second = await w.another();
    for (let i = 0; i < 20; i++) sent.push(await send(second, 121, chatId, `after the kill ${i}`));
    await everythingArrived(w, sent, 60_000);
    console.log(
      `SIGKILL with ${ackedAtKill} of 401 delivered and ${inFlightAtKill} requests in flight; the second ` +
        `instance delivered the rest; ` +
        `${receiver.duplicates().length} sent twice`,
    );
    // Some request was cut by the kill (the receiver's answer never went out) and delivered again afterwards.
    const cut = receiver.received.filter(
      (r) => !r.acked && r.behaviour === "ok" && r.at < receiver.acked.get(r.webhookId)!.at,
    );
    expect(cut.length, "no delivery was in flight at the kill").toBeGreaterThan(0);
    // Only what was in flight at the kill can come twice.
    expect(receiver.duplicates().length).toBeLessThanOrEqual(Number(FAULTS.WEBHOOK_CONCURRENCY));
  }, 120_000);

  it("the database's sessions terminated during sends and deliveries: nothing lost", async () => {
    const w = await world();
    const { receiver, client, chat } = w;
    receiver.behave("ok", { delayMs: 20 });
    const chats = await Promise.all([0, 1, 2].map((i) => openChat(chat, 131 + i, 130, 231)));
    const sent: number[] = [];
    let failed = 0;
    let terminated = 0;
    const startedAt = Date.now();
    const writers = chats.map(async (chatId, i) => {
      let n = 0;
      while (Date.now() - startedAt < 10_000) {
        const id = await trySend(chat, 131 + i, chatId, `through terminations ${n++}`);
        if (id === undefined) failed += 1;
        else sent.push(id);
      }
    });
    const killer = (async () => {
      while (Date.now() - startedAt < 10_000) {
        await new Promise((resolve) => setTimeout(resolve, 700));
        const { rows } = await client.query<{ n: number }>(
          `select count(*) filter (where pg_terminate_backend(pid))::int as n from pg_stat_activity
           where datname = current_database() and pid <> pg_backend_pid()`,
        );
        terminated += rows[0]!.n;
      }
    })();
    await Promise.all([...writers, killer]);
    console.log(`sessions terminated: ${terminated}; sends ${sent.length} stored, ${failed} failed`);
    expect(terminated).toBeGreaterThan(5);
    // Recovered: a send goes through, and every recorded change arrives.
    await until(async () => (await trySend(chat, 131, chats[0]!, "after")) !== undefined, 20_000, "a send after", 200);
    await everythingArrived(w, sent, 60_000);
    expect(receiver.duplicates().length).toBeLessThanOrEqual(Number(FAULTS.WEBHOOK_CONCURRENCY));
  }, 120_000);

  it("two instances on one database deliver each change exactly once, live and draining a backlog together", async () => {
    const w = await world();
    const { receiver } = w;
    receiver.behave("ok", { delayMs: 5 });
    const second = await w.another();
    const instances = [w.chat, second];
    const chats = await Promise.all([0, 1, 2, 3].map((i) => openChat(instances[i % 2]!, 141 + i, 140, 241)));
    const sent: number[] = [];
    const sendAll = (tag: string) =>
      Promise.all(
        chats.map(async (chatId, i) => {
          for (let n = 0; n < 100; n++) sent.push(await send(instances[(i + n) % 2]!, 141 + i, chatId, `${tag} ${n}`));
        }),
      );
    // Live: sends through both instances, delivered as they come.
    await sendAll("live");
    expect(await everythingArrived(w, sent, 60_000)).toHaveLength(404);

    // A backlog both instances drain at once (their claims collide all the time): 400 sends and 5,000 rows put
    // in by SQL while the receiver is down (refused connections: none of it reaches the receiver), then up.
    await receiver.down();
    await sendAll("backlog");
    await w.client.query(
      `insert into webhook_deliveries (type, data)
       select 'test.backlog', jsonb_build_object('n', i) from generate_series(1, 5000) as i`,
    );
    receiver.behave("ok");
    await receiver.up();
    const ids = await everythingArrived(w, sent, 60_000);
    expect(ids).toHaveLength(404 + 400 + 5_000);
    expect(receiver.duplicates(), "webhook-ids delivered twice").toEqual([]);
    expect(receiver.received.length - ids.length, "requests beyond one per delivery").toBe(0);
    let delivered: number[] = [];
    await until(
      async () => {
        delivered = await Promise.all(
          instances.map(async (chat) =>
            metricValue((await chat.internal("GET", "/metrics")).body, "listings_chat_webhook_deliveries_total", {
              outcome: "delivered",
            }),
          ),
        );
        return delivered[0]! + delivered[1]! >= ids.length;
      },
      5_000,
      "the deliveries counted in /metrics",
      100,
    );
    console.log(`two instances: ${ids.length} deliveries, ${delivered.join(" + ")} by each`);
    expect(delivered[0]! + delivered[1]!).toBe(ids.length);
    expect(Math.min(...delivered), "one instance delivered nothing").toBeGreaterThan(0);
  }, 120_000);

  it("dead after WEBHOOK_MAX_AGE_S with the receiver down, listed, sent again and delivered", async () => {
    const w = await world({ WEBHOOK_MAX_AGE_S: "2" });
    const { receiver, chat } = w;
    await receiver.down();
    const chatId = await openChat(chat, 151, 152, 251);
    const sent: number[] = [];
    for (let i = 0; i < 5; i++) sent.push(await send(chat, 151, chatId, `to the dead letters ${i}`));
    const deadList = async () => {
      const res = await chat.internal("GET", "/internal/chat/webhooks/dead");
      expect(res.status).toBe(200);
      return res.body.deliveries as Array<{ webhook_id: string; type: string; attempts: number; last_error: string }>;
    };
    await until(async () => (await deadList()).length === 6, 30_000, "6 deliveries dead", 200);
    const dead = await deadList();
    expect(new Set(dead.map((d) => d.webhook_id))).toEqual(new Set(await recordedIds(w.client)));
    // Refused connections, or none tried at all once the breaker was open: dead either way.
    for (const d of dead) expect(d.attempts).toBeGreaterThanOrEqual(0);
    expect(dead.some((d) => d.attempts > 0 && d.last_error)).toBe(true);
    await until(
      async () => {
        const stats = (await chat.internal("GET", "/internal/chat/ws/stats")).body.webhooks;
        return stats.pending === 0 && stats.dead === 6;
      },
      10_000,
      "stats: 6 dead, none pending",
      200,
    );

    await receiver.up();
    expect(await chat.internal("POST", "/internal/chat/webhooks/dead/retry")).toEqual({
      status: 200,
      body: { requeued: 6 },
    });
    await everythingArrived(w, sent, 30_000);
    expect(await deadList()).toEqual([]);
  }, 90_000);
});
