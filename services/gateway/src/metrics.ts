import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { WsCounters } from "./proxy/ws-upgrade.ts";

/** The gateway's Prometheus registry (never the global one), read from the upgrade pass's counters. */
export function createGatewayMetrics(counters: WsCounters, openPipes: () => number): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "gateway_" });
  new Gauge({
    name: "gateway_ws_pipes",
    help: "Open WebSocket pipes to chat instances",
    registers: [registry],
    collect() {
      this.set(openPipes());
    },
  });
  new Counter({
    name: "gateway_ws_upgrades_accepted_total",
    help: "WebSocket upgrades accepted and piped",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(counters.accepted);
    },
  });
  new Counter({
    name: "gateway_ws_upgrades_refused_total",
    help: "WebSocket upgrades refused before any 101, by HTTP status",
    labelNames: ["status"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [status, n] of Object.entries(counters.refused)) this.inc({ status }, n);
    },
  });
  new Counter({
    name: "gateway_ws_upstream_failures_total",
    help: "Upgrade attempts a chat instance failed: its non-101 status, timeout or unreachable",
    labelNames: ["outcome"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [outcome, n] of Object.entries(counters.upstreamFailures)) this.inc({ outcome }, n);
    },
  });
  return registry;
}
