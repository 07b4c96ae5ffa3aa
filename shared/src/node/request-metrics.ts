import { Histogram, type Registry } from "prom-client";
import type { RequestScopeOptions } from "./request-scope.ts";

/** Latency buckets, in seconds: from a fast query or answer (1 ms) to a request at its deadline (10 s). */
export const LATENCY_BUCKETS_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * A histogram `name` of answered requests by route pattern, method and status, registered on `registry`;
 * the observer to give `requestScope` (both services' REST latency).
 */
export function requestDurationHistogram(
  registry: Registry,
  name: string,
  help: string,
): NonNullable<RequestScopeOptions["observe"]> {
  const histogram = new Histogram({
    name,
    help,
    labelNames: ["route", "method", "status"],
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [registry],
  });
  return ({ route, method, status, seconds }) => histogram.observe({ route, method, status: String(status) }, seconds);
}
