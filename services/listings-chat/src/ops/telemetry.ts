import { LATENCY_BUCKETS_SECONDS, requestDurationHistogram } from "@listings-chat/shared/node";
import { Counter, Histogram, Registry } from "prom-client";

/**
 * The histograms and event counters of one instance (the counters of stats.ts are mirrored by metrics.ts
 * into the same registry). Made before anything else, so that the database, the hub and the app each get
 * the part they feed.
 */
export function createTelemetry() {
  const registry = new Registry();
  return {
    registry,
    observeRequest: requestDurationHistogram(
      registry,
      "listings_chat_http_request_duration_seconds",
      "REST and ops requests, from arrival to answer, by route pattern, method and status",
    ),
    /** From the upgrade's acceptance to the `connected` frame (the stream's end read, the greeting written). */
    upgradeSeconds: new Histogram({
      name: "listings_chat_ws_upgrade_duration_seconds",
      help: "From an accepted upgrade to its connected frame",
      buckets: LATENCY_BUCKETS_SECONDS,
      registers: [registry],
    }),
    replaySeconds: new Histogram({
      name: "listings_chat_replay_duration_seconds",
      help: "A replay from a cursor, from the first page read to live",
      buckets: LATENCY_BUCKETS_SECONDS,
      registers: [registry],
    }),
    dbQuerySeconds: new Histogram({
      name: "listings_chat_db_query_duration_seconds",
      help: "PostgreSQL queries, from the call to the answer, by first keyword (select, insert, begin…)",
      labelNames: ["operation"],
      buckets: LATENCY_BUCKETS_SECONDS,
      registers: [registry],
    }),
    deliverySeconds: new Histogram({
      name: "listings_chat_send_to_delivery_seconds",
      help: "From a message's commit (its created_at) to its event written to the recipients' sockets here",
      buckets: LATENCY_BUCKETS_SECONDS,
      registers: [registry],
    }),
    gapFills: new Counter({
      name: "listings_chat_sequencer_gap_fills_total",
      help: "Events missing from the bus, read from the stream instead (a gap the sequencer filled)",
      registers: [registry],
    }),
    closes: new Counter({
      name: "listings_chat_ws_closes_total",
      help: "WebSocket connections closed, by close code (1000 normal, 1001 going away, 1006 dropped, 1013 slow…)",
      labelNames: ["code"],
      registers: [registry],
    }),
  };
}

export type Telemetry = ReturnType<typeof createTelemetry>;

/** What the hub feeds; a hub without it (in tests) feeds nothing. */
export type HubTelemetry = Pick<
  Telemetry,
  "upgradeSeconds" | "replaySeconds" | "deliverySeconds" | "gapFills" | "closes"
>;
