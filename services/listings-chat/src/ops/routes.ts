import { Hono } from "hono";
import type { Registry } from "prom-client";
import type { Bus } from "../bus/bus.ts";
import type { DatabaseHandle } from "../db/client.ts";
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
}

/** `/health` and `/ready` (open to probes) are mounted by the app; these need the internal token. */
export function createOpsRoutes(deps: OpsDeps) {
  const ops = new Hono();
  ops.get("/internal/chat/ws/stats", (c) => {
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
    });
  });
  ops.get("/metrics", async (c) => {
    c.header("Content-Type", deps.metrics.contentType);
    return c.body(await deps.metrics.metrics());
  });
  return ops;
}

export function createProbeRoutes(deps: Pick<OpsDeps, "bus" | "database" | "isShuttingDown">) {
  const probes = new Hono();
  probes.get("/health", (c) => c.json({ status: "ok" }));
  probes.get("/ready", async (c) => {
    const checks: Record<string, boolean> = {
      database: await deps.database.ping().then(
        () => true,
        () => false,
      ),
      bus: deps.bus.isConnected(),
      accepting: !deps.isShuttingDown(),
    };
    const ready = Object.values(checks).every(Boolean);
    return c.json({ status: ready ? "ready" : "not_ready", checks }, ready ? 200 : 503);
  });
  return probes;
}
