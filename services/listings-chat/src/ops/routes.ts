import { answerWithin } from "@listings-chat/shared/node";
import { Hono } from "hono";
import type { Registry } from "prom-client";
import type { Bus } from "../bus/bus.ts";
import type { DatabaseHandle } from "../db/client.ts";
import type { ErasureStatus } from "../personal-data/erasure.ts";
import type { RetentionStatus } from "../personal-data/retention.ts";
import type { WebhookCounts } from "../webhooks/outbox.ts";
import type { Stats } from "./stats.ts";

export interface OpsDeps {
  instanceId: string;
  startedAt: number;
  stats: Stats;
  snapshot: () => { connections: number; usersOnline: number };
  bus: Bus;
  database: DatabaseHandle;
  metrics: Registry;
  isShuttingDown: () => boolean;
  /** Whether the Redis client of presence and limits answers, when there is one. */
  redisReady?: () => Promise<boolean>;
  /** Closes, with 1001, the sockets that came through the gateway `gatewayId`; answers how many. */
  closeGatewaySockets: (gatewayId: string) => number;
  /** The webhook queue's counts, for the whole deployment (webhooks/counts.ts: cached a few seconds). */
  webhookCounts: () => Promise<WebhookCounts>;
  /** MESSAGE_RETENTION_DAYS's last run, whichever instance did it (personal-data/retention.ts); unset: no retention. */
  retention?: () => Promise<RetentionStatus>;
  /** The erasures under way in the deployment (personal-data/erasure.ts). */
  erasures: () => Promise<ErasureStatus>;
}

/** How long stats wait for a read of the database's own (erasures, retention) before they show null. */
const STATS_READ_WAIT_MS = 1_000;

/** The checks behind `/ready` (probes) and `/internal/chat/ready` (the gateway's readiness). */
async function readiness(deps: Pick<OpsDeps, "bus" | "database" | "isShuttingDown" | "redisReady">) {
  const [database, redis] = await Promise.all([
    deps.database.ping().then(
      () => true,
      () => false,
    ),
    deps.redisReady ? deps.redisReady() : Promise.resolve(true),
  ]);
  const checks: Record<string, boolean> = {
    database,
    bus: deps.bus.isConnected(),
    redis,
    accepting: !deps.isShuttingDown(),
  };
  const ready = Object.values(checks).every(Boolean);
  return { body: { status: ready ? "ready" : "not_ready", checks }, status: ready ? (200 as const) : (503 as const) };
}

/** `/health` and `/ready` (open to probes) are mounted by the app; these need the internal token. */
export function createOpsRoutes(deps: OpsDeps) {
  const ops = new Hono();
  ops.get("/internal/chat/ws/stats", async (c) => {
    const { stats } = deps;
    const { connections, usersOnline } = deps.snapshot();
    return c.json({
      instance_id: deps.instanceId,
      uptime_s: Math.floor((Date.now() - deps.startedAt) / 1000),
      connections,
      users_online: usersOnline,
      connections_total: stats.connectionsTotal,
      disconnections_total: stats.disconnectionsTotal,
      messages_received_total: stats.messagesReceivedTotal,
      messages_sent_total: stats.messagesSentTotal,
      broadcasts_total: stats.broadcastsTotal,
      errors_total: stats.errorsTotal,
      rate_limited_total: stats.rateLimitedTotal,
      slow_consumer_disconnects_total: stats.slowConsumerDisconnectsTotal,
      bus: { kind: deps.bus.kind, connected: deps.bus.isConnected() },
      // Read whether or not this instance sends: rows wait in the table for any instance that does. Null
      // while the database does not answer (and never did to this instance).
      webhooks: await deps.webhookCounts().catch(() => null),
      // Only with MESSAGE_RETENTION_DAYS: its last run's times and counts (null while the database does not answer).
      // Null while the database does not answer within STATS_READ_WAIT_MS: stats answer during an outage.
      erasures: await answerWithin(deps.erasures, STATS_READ_WAIT_MS),
      ...(deps.retention ? { retention: await answerWithin(deps.retention, STATS_READ_WAIT_MS) } : {}),
    });
  });
  // The gateway's readiness question: behind the internal token, so a wrong token is never "ready".
  ops.get("/internal/chat/ready", async (c) => {
    const { body, status } = await readiness(deps);
    return c.json(body, status);
  });
  // A draining gateway asks for this at its deadline: its clients get 1001 instead of a bare TCP close.
  ops.post("/internal/chat/gateways/:gatewayId/close", (c) =>
    c.json({ closed: deps.closeGatewaySockets(c.req.param("gatewayId")) }),
  );
  ops.get("/metrics", async (c) => {
    c.header("Content-Type", deps.metrics.contentType);
    return c.body(await deps.metrics.metrics());
  });
  return ops;
}

export function createProbeRoutes(deps: Pick<OpsDeps, "bus" | "database" | "isShuttingDown" | "redisReady">) {
  const probes = new Hono();
  probes.get("/health", (c) => c.json({ status: "ok" }));
  probes.get("/ready", async (c) => {
    const { body, status } = await readiness(deps);
    return c.json(body, status);
  });
  return probes;
}
