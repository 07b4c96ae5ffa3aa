/**
 * What a supervisor and its workers say to each other over the IPC channel of `child_process.fork`
 * (structured clone: `serialization: "advanced"`).
 */

/** A worker to its supervisor. */
export type WorkerMessage =
  /** The worker listens on `port` (the supervisor gives that port to the workers it starts after it). */
  | { type: "listening"; port: number }
  /** A scrape of /metrics landed at this worker: collect every worker's metrics for it. */
  | { type: "metrics-wanted"; id: number }
  /** This worker's metrics (prom-client's `getMetricsAsJSON()`) for collection `id`. */
  | { type: "metrics-part"; id: number; metrics: unknown[] };

/** A supervisor to one of its workers. */
export type SupervisorMessage =
  /** Send your metrics for collection `id` (a `metrics-part`). */
  | { type: "metrics-collect"; id: number }
  /** The answer to `metrics-wanted` `id`: every serving worker's metrics summed, in Prometheus text, or why not. */
  | { type: "metrics-all"; id: number; text: string }
  | { type: "metrics-all"; id: number; error: string };

/** Whether `value` looks like one of these messages (anything else on the channel is ignored). */
export function isMessage<M extends { type: string }>(value: unknown): value is M {
  return typeof value === "object" && value !== null && typeof (value as { type?: unknown }).type === "string";
}
