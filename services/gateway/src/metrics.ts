import { LATENCY_BUCKETS_SECONDS, requestDurationHistogram } from "@listings-chat/shared/node";
import { Counter, collectDefaultMetrics, Gauge, Histogram, type Registry } from "prom-client";
import type { RestUpstreamFailure } from "./proxy/rest-forward.ts";
import type { Upstream } from "./proxy/upstreams.ts";
import type { WsCounters } from "./proxy/ws-upgrade.ts";
import type { SupervisorLink } from "./workers/worker.ts";

/** What `/metrics` answers with: a registry, or the sum of every worker's (GATEWAY_WORKERS). */
export type MetricsSource = Pick<Registry, "contentType" | "metrics">;

/** The histograms and failure counters the gateway's parts feed as they go. */
export function createGatewayTelemetry(registry: Registry) {
  const upgradeSeconds = new Histogram({
    name: "listings_chat_gateway_ws_upgrade_duration_seconds",
    help: "Accepted upgrades, from the request to the pipe (token, cap, queue and the instance's 101)",
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });
  const restFailures = new Counter({
    name: "listings_chat_gateway_rest_upstream_failures_total",
    help: "Forwarded REST requests an instance failed, by kind (timeout, unreachable, failed, too_large, misconfigured)",
    labelNames: ["outcome"],
    registers: [registry],
  });
  return {
    observeRequest: requestDurationHistogram(
      registry,
      "listings_chat_gateway_http_request_duration_seconds",
      "REST requests, from arrival to answer (forwarding included), by route pattern, method and status",
    ),
    observeUpgrade: (seconds: number) => upgradeSeconds.observe(seconds),
    countRestFailure: (outcome: RestUpstreamFailure) => restFailures.inc({ outcome }),
  };
}

/**
 * The gateway's Prometheus registry (never the global one), read from the upgrade pass's counters. In a
 * worker of several (GATEWAY_WORKERS), a scrape answers the sum of all of them, which the supervisor
 * collects: Prometheus reaches whichever worker the kernel picks, and must see the whole gateway.
 */
export function createGatewayMetrics(
  registry: Registry,
  counters: WsCounters,
  openPipes: () => number,
  instances: () => readonly Upstream[],
  /** The supervisor of this worker (GATEWAY_WORKERS > 1); none when the gateway serves alone. */
  supervisor?: SupervisorLink,
): MetricsSource {
  collectDefaultMetrics({ register: registry, prefix: "listings_chat_gateway_" });
  new Gauge({
    name: "listings_chat_gateway_ws_pipes",
    help: "Open WebSocket pipes to chat instances",
    registers: [registry],
    collect() {
      this.set(openPipes());
    },
  });
  new Counter({
    name: "listings_chat_gateway_ws_upgrades_accepted_total",
    help: "WebSocket upgrades accepted and piped",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(counters.accepted);
    },
  });
  new Counter({
    name: "listings_chat_gateway_ws_upgrades_refused_total",
    help: "WebSocket upgrades refused before any 101, by HTTP status",
    labelNames: ["status"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [status, n] of Object.entries(counters.refused)) this.inc({ status }, n);
    },
  });
  new Counter({
    name: "listings_chat_gateway_ws_upstream_failures_total",
    help: "Upgrade attempts a chat instance failed: its non-101 status, timeout or unreachable",
    labelNames: ["outcome"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [outcome, n] of Object.entries(counters.upstreamFailures)) this.inc({ outcome }, n);
    },
  });
  new Counter({
    name: "listings_chat_gateway_ws_upgrade_queue_full_total",
    help: "WebSocket upgrades refused with 503 upstream_busy because the queue for an instance's slots was full",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(counters.queueFull);
    },
  });
  new Gauge({
    name: "listings_chat_gateway_ws_upgrades_in_flight",
    help: "Upgrades at a chat instance that it has not greeted yet (at most UPSTREAM_UPGRADES_IN_FLIGHT)",
    labelNames: ["upstream"],
    registers: [registry],
    collect() {
      this.reset();
      for (const instance of instances()) this.set({ upstream: instance.base }, instance.upgrades.inFlight);
    },
  });
  new Gauge({
    name: "listings_chat_gateway_ws_upgrades_waiting",
    help: "Upgrades waiting for a slot at a chat instance (at most UPSTREAM_UPGRADE_QUEUE_MAX)",
    labelNames: ["upstream"],
    registers: [registry],
    collect() {
      this.reset();
      for (const instance of instances()) this.set({ upstream: instance.base }, instance.upgrades.waiting);
    },
  });
  if (!supervisor) return registry;
  supervisor.shareMetrics(registry);
  return { contentType: registry.contentType, metrics: () => supervisor.metricsOfAllWorkers() };
}
