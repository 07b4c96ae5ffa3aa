import { Counter, collectDefaultMetrics, Gauge, type Registry } from "prom-client";
import type { Stats } from "./stats.ts";

/**
 * The instance's Prometheus registry (never the global one; telemetry.ts made it, with the histograms):
 * gauges and counters read from the same counters as the stats, and the process's own metrics.
 */
export function createMetrics(
  registry: Registry,
  stats: Stats,
  snapshot: () => { connections: number; usersOnline: number },
): Registry {
  collectDefaultMetrics({ register: registry, prefix: "listings_chat_" });
  new Gauge({
    name: "listings_chat_ws_connections",
    help: "Open WebSocket connections",
    registers: [registry],
    collect() {
      this.set(snapshot().connections);
    },
  });
  new Gauge({
    name: "listings_chat_users_online",
    help: "Users with at least one socket on this instance",
    registers: [registry],
    collect() {
      this.set(snapshot().usersOnline);
    },
  });
  const counters: Array<[keyof Stats, string]> = [
    ["connectionsTotal", "WebSocket connections accepted"],
    ["disconnectionsTotal", "WebSocket connections closed"],
    ["messagesReceivedTotal", "Frames received from clients"],
    ["messagesSentTotal", "Frames written to clients"],
    ["broadcastsTotal", "Events and ephemeral frames fanned out"],
    ["errorsTotal", "Errors (error frames, socket and bus failures)"],
    ["rateLimitedTotal", "Writes refused by a per-user rate limit (sends, edits, chat opens, resumes…)"],
    ["sendLimitLocalTotal", "Writes counted by this instance alone because Redis did not answer the rate limits"],
    ["slowConsumerDisconnectsTotal", "Sockets closed with 1013 for a backlog over 1 MiB"],
    ["upgradesRefusedBusyTotal", "Upgrades refused with 503 instance_busy: CONNECT_QUEUE_MAX greetings were pending"],
  ];
  for (const [key, help] of counters) {
    const snake = key.replace(/[A-Z]/g, (ch) => `_${ch.toLowerCase()}`).replace(/_total$/, "");
    new Counter({
      name: `listings_chat_${snake}_total`,
      help,
      registers: [registry],
      collect() {
        // The stats object is the source of truth: mirror its value at scrape time.
        this.reset();
        this.inc(stats[key]);
      },
    });
  }
  return registry;
}
