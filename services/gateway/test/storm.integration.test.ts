/**
 * A reconnect storm with real processes (issue 14): 2,000 sockets opened at once through one gateway to one
 * listings-chat instance (on PostgreSQL and Redis when they are given, as in CI; on PGlite alone otherwise)
 * whose connect queue is small. Every upgrade must be accepted, or refused at once with 503 and Retry-After
 * (never a time-out); a refused client that retries after the Retry-After with the same ws-token gets in;
 * the gateway never counts the busy instance as failed; and the refusals leave no open file behind in
 * either process.
 */
import { randomBytes } from "node:crypto";
import jwt from "jsonwebtoken";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseTargets } from "../../listings-chat/test/support/databases.ts";
import { redisNamespace, redisUrl } from "../../listings-chat/test/support/redis.ts";
import { describeOutcome, type E2ESocket, http, inWaves, pollUntil, sleep, tryUpgrade } from "./support/e2e.ts";
import { openFilesSettle, type ServiceProcess, startChatProcess, startGatewayProcess } from "./support/processes.ts";

const SOCKETS = 2_000;
/**
 * Far below the storm, so that both refusals are taken however fast this machine is: the gateway's when
 * more than 64 upgrades wait for its 32 slots at the instance, the instance's when more than 8 of those
 * wait for their greeting.
 */
const GATEWAY_QUEUE_MAX = 64;
const CONNECT_QUEUE_MAX = 8;
/** Every upgrade must be answered (101, or a refusal) within the browser client's connect deadline. */
const ANSWER_WITHIN_MS = 8_000;
/** Retries a refused client may need: each waits the Retry-After it was given (1–3 s). */
const MAX_ATTEMPTS = 30;
/** Open files a quiet process may differ by (a pooled connection, a timer's handle). */
const FD_SLACK = 6;

const secret = () => randomBytes(24).toString("hex");
const internalToken = secret();
const jwtSecret = secret();
const bearer = (userId: number) => ({
  authorization: `Bearer ${jwt.sign({ sub: String(userId) }, jwtSecret, { algorithm: "HS256", expiresIn: 600 })}`,
});

/** One client of the storm: its first answer, and its socket once it got in. */
interface StormClient {
  userId: number;
  token: string;
  first?: string;
  attempts: number;
  socket?: E2ESocket;
}

/** What a refusal must look like: 503, upstream_busy, and a Retry-After of a few whole seconds. */
function busyRetryAfterMs(outcome: Awaited<ReturnType<typeof tryUpgrade>>): number | string {
  if (outcome.kind !== "refused") return describeOutcome(outcome);
  const retryAfter = outcome.headers["retry-after"];
  if (outcome.status !== 503 || outcome.body?.error?.code !== "upstream_busy" || !/^[1-9]$/.test(retryAfter ?? ""))
    return describeOutcome(outcome);
  return Number(retryAfter) * 1_000;
}

describe("a reconnect storm through the gateway (real processes)", () => {
  let chat: ServiceProcess;
  let gateway: ServiceProcess;
  let dropDatabase = async () => {};
  let dropRedis = async () => {};

  beforeAll(async () => {
    const postgres = databaseTargets().find((t) => t.name === "postgres");
    const redis = redisUrl();
    const production: Record<string, string> = {};
    if (postgres) {
      const database = await postgres.create();
      dropDatabase = database.drop;
      if (!("url" in database.options)) throw new Error("the postgres target gives a URL");
      production.DATABASE_URL = database.options.url;
    }
    if (redis) {
      const namespace = redisNamespace(redis);
      dropRedis = namespace.drop;
      Object.assign(production, { REDIS_URL: redis, REDIS_KEY_PREFIX: namespace.keyPrefix });
    }
    chat = await startChatProcess({
      ...production,
      INTERNAL_TOKEN: internalToken,
      CONNECT_QUEUE_MAX: String(CONNECT_QUEUE_MAX),
    });
    gateway = await startGatewayProcess({
      ...(redis ? { REDIS_URL: redis, REDIS_KEY_PREFIX: production.REDIS_KEY_PREFIX ?? "" } : {}),
      INTERNAL_TOKEN: internalToken,
      JWT_SECRET: jwtSecret,
      WS_TOKEN_SECRET: secret(),
      WS_TOKEN_TTL_SECONDS: "300",
      CHAT_UPSTREAMS: chat.baseUrl,
      UPSTREAM_UPGRADE_QUEUE_MAX: String(GATEWAY_QUEUE_MAX),
    });
  }, 60_000);

  afterAll(async () => {
    await gateway?.stop();
    await chat?.stop();
    await dropRedis();
    await dropDatabase();
  }, 60_000);

  it("answers every upgrade at once (101, or 503 + Retry-After), lets the refused in on retry, and leaks nothing", async () => {
    const openFilesBefore = { gateway: gateway.openFiles(), chat: chat.openFiles() };
    const rssBefore = { gateway: gateway.rssMiB(), chat: chat.rssMiB() };

    const clients: StormClient[] = await inWaves(
      Array.from({ length: SOCKETS }, (_, i) => async () => {
        const userId = 900_000 + i;
        const res = await http(gateway.baseUrl, "POST", "/api/v2/ws-token", { headers: bearer(userId) });
        if (res.status !== 200) throw new Error(`ws-token answered ${res.status}: ${res.text}`);
        return { userId, token: res.body.token as string, attempts: 0 };
      }),
      100,
    );

    // Each client: upgrades; when refused, waits the Retry-After (jittered as the browser client does) and
    // tries again with the same ws-token, which a busy refusal must leave usable.
    const wrongAnswers: string[] = [];
    let slowestAnswerMs = 0;
    const url = (client: StormClient) => `ws://127.0.0.1:${gateway.port}/ws/chat?token=${client.token}`;
    async function connect(client: StormClient): Promise<void> {
      while (client.attempts < MAX_ATTEMPTS) {
        client.attempts += 1;
        const askedAt = Date.now();
        const outcome = await tryUpgrade(url(client));
        slowestAnswerMs = Math.max(slowestAnswerMs, Date.now() - askedAt);
        if (outcome.kind === "open") {
          client.first ??= "open";
          await outcome.socket.waitFor((f) => f.type === "connected", 15_000);
          client.socket = outcome.socket;
          return;
        }
        const retryAfterMs = busyRetryAfterMs(outcome);
        client.first ??= typeof retryAfterMs === "number" ? "busy" : retryAfterMs;
        if (typeof retryAfterMs === "string") {
          wrongAnswers.push(`user ${client.userId}, attempt ${client.attempts}: ${retryAfterMs}`);
          return;
        }
        await sleep(retryAfterMs * (0.5 + Math.random()));
      }
    }
    const started = Date.now();
    await Promise.all(clients.map(connect));
    const allInMs = Date.now() - started;

    expect(wrongAnswers.slice(0, 5)).toEqual([]);
    expect(slowestAnswerMs).toBeLessThan(ANSWER_WITHIN_MS);
    const accepted = clients.filter((c) => c.first === "open").length;
    const refused = clients.filter((c) => c.first === "busy").length;
    expect(accepted + refused).toBe(SOCKETS);
    expect(clients.filter((c) => !c.socket).map((c) => c.userId)).toEqual([]);

    // Never a failure that marks the instance down (a time-out, no answer, a 5xx without Retry-After).
    const metrics = await http(gateway.baseUrl, "GET", "/metrics", { headers: { "x-internal-token": internalToken } });
    const failures = [
      ...metrics.text.matchAll(/^listings_chat_gateway_ws_upstream_failures_total\{outcome="([^"]+)"\} (\d+)/gm),
    ];
    expect(failures.filter(([, outcome]) => outcome !== "busy").map(([line]) => line)).toEqual([]);
    // Both refusals were taken, not merely allowed: the gateway's full queue and the instance's busy answer.
    const count = (pattern: RegExp) => Number(pattern.exec(metrics.text)?.[1] ?? 0);
    const queueFull = count(/^listings_chat_gateway_ws_upgrade_queue_full_total (\d+)$/m);
    const instanceBusy = count(/^listings_chat_gateway_ws_upstream_failures_total\{outcome="busy"\} (\d+)$/m);
    expect(queueFull).toBeGreaterThan(0);
    expect(instanceBusy).toBeGreaterThan(0);
    // The instance counted the same refusals.
    const chatMetrics = await http(chat.baseUrl, "GET", "/metrics", { headers: { "x-internal-token": internalToken } });
    expect(chatMetrics.text).toMatch(new RegExp(`^listings_chat_upgrades_refused_busy_total ${instanceBusy}$`, "m"));
    expect(refused).toBeGreaterThan(0);
    expect(metrics.text).toMatch(new RegExp(`^listings_chat_gateway_ws_upgrades_accepted_total ${SOCKETS}$`, "m"));

    // Refusals hold nothing: with every client in, the gateway holds two files per pipe and the instance one.
    const gatewayOpen = await openFilesSettle(gateway, openFilesBefore.gateway + 2 * SOCKETS + FD_SLACK);
    const chatOpen = await openFilesSettle(chat, openFilesBefore.chat + SOCKETS + FD_SLACK);
    expect(gatewayOpen - openFilesBefore.gateway).toBeGreaterThanOrEqual(2 * SOCKETS - FD_SLACK);
    expect(gatewayOpen - openFilesBefore.gateway).toBeLessThanOrEqual(2 * SOCKETS + FD_SLACK);
    expect(chatOpen - openFilesBefore.chat).toBeGreaterThanOrEqual(SOCKETS - FD_SLACK);
    expect(chatOpen - openFilesBefore.chat).toBeLessThanOrEqual(SOCKETS + FD_SLACK);
    const perSocketKiB = {
      gateway: ((gateway.rssMiB() - rssBefore.gateway) * 1024) / SOCKETS,
      chat: ((chat.rssMiB() - rssBefore.chat) * 1024) / SOCKETS,
    };
    console.info(
      `storm of ${SOCKETS}: ${accepted} accepted at once, ${refused} refused (${queueFull} by the gateway's queue, ${instanceBusy} by the instance, retries included); all in after ${allInMs} ms, slowest answer ${slowestAnswerMs} ms; ` +
        `at most ${Math.max(...clients.map((c) => c.attempts))} attempts; RSS per socket ` +
        `gateway ${perSocketKiB.gateway.toFixed(1)} KiB, chat ${perSocketKiB.chat.toFixed(1)} KiB`,
    );
    // Loose bounds that catch a leak per socket (a buffer or a closure retained), not noise.
    expect(perSocketKiB.gateway).toBeLessThan(128);
    expect(perSocketKiB.chat).toBeLessThan(128);

    // The instance counts them all; then every socket closes and both processes are back where they began.
    const stats = await http(chat.baseUrl, "GET", "/internal/chat/ws/stats", {
      headers: { "x-internal-token": internalToken },
    });
    expect(stats.body.connections).toBe(SOCKETS);
    await inWaves(
      clients.map((c) => async () => {
        await c.socket?.close();
      }),
      200,
    );
    expect(await pollUntil(() => gateway.openFiles() <= openFilesBefore.gateway + FD_SLACK, 15_000, 100)).toBe(true);
    expect(await pollUntil(() => chat.openFiles() <= openFilesBefore.chat + FD_SLACK, 15_000, 100)).toBe(true);
    expect(chat.alive() && gateway.alive()).toBe(true);
  }, 180_000);
});
