/**
 * A gateway process started by the supervisor (GATEWAY_WORKERS > 1, supervisor.ts): its end of the IPC
 * channel. It says when it listens, gives its metrics to the supervisor's collections and asks it for
 * everyone's when a scrape lands here, and stops (gracefully, as at SIGTERM) when the supervisor is gone.
 */
import type { Registry } from "prom-client";
import { isMessage, type SupervisorMessage, type WorkerMessage } from "./messages.ts";
import { WORKER_ARGUMENT } from "./role.ts";

/** How long a scrape waits for the supervisor's sum (it waits 2 s for the workers itself). */
const METRICS_ANSWER_MS = 5_000;

export interface SupervisorLink {
  /** This worker's number, 1 to GATEWAY_WORKERS (its logs' `worker` field). */
  readonly number: number;
  /** Tells the supervisor this worker listens on `port`. */
  listening(port: number): void;
  /** The registry whose metrics this worker gives to every collection. */
  shareMetrics(registry: Registry): void;
  /** Every serving worker's metrics, summed, in Prometheus text: what a scrape of this worker answers. */
  metricsOfAllWorkers(): Promise<string>;
}

/**
 * Joins the supervisor over this process's IPC channel, as worker `number`. Once per process: run.ts calls
 * it and hands the link to startGateway.
 */
export function joinSupervisor(number: number): SupervisorLink {
  const send = process.send?.bind(process);
  if (!send) {
    throw new Error(
      `${WORKER_ARGUMENT}=${number} without a supervisor: start the gateway with GATEWAY_WORKERS=<n> instead`,
    );
  }
  const tell = (message: WorkerMessage) =>
    new Promise<void>((resolve, reject) => {
      if (!process.connected) return reject(new Error("the supervisor is gone"));
      send(message, undefined, {}, (error: Error | null) => (error ? reject(error) : resolve()));
    });
  let registry: Registry | undefined;
  let scrapeIds = 0;
  const scrapes = new Map<number, (answer: Extract<SupervisorMessage, { type: "metrics-all" }>) => void>();

  process.on("message", (message: unknown) => {
    if (!isMessage<SupervisorMessage>(message)) return;
    if (message.type === "metrics-collect") {
      void (async () => {
        const metrics = registry ? await registry.getMetricsAsJSON() : [];
        await tell({ type: "metrics-part", id: message.id, metrics }).catch(() => {});
      })();
    } else if (message.type === "metrics-all") {
      scrapes.get(message.id)?.(message);
    }
  });
  // The supervisor was killed (SIGKILL, OOM): nothing would stop this worker or start it again, so it stops
  // as at SIGTERM, through the handlers main.ts installed.
  process.once("disconnect", () => process.kill(process.pid, "SIGTERM"));

  return {
    number,
    listening(port) {
      void tell({ type: "listening", port }).catch(() => {});
    },
    shareMetrics(shared) {
      registry = shared;
    },
    async metricsOfAllWorkers() {
      const id = ++scrapeIds;
      try {
        const answer = await new Promise<Extract<SupervisorMessage, { type: "metrics-all" }>>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new Error(`the supervisor did not sum the workers' metrics within ${METRICS_ANSWER_MS} ms`)),
            METRICS_ANSWER_MS,
          );
          scrapes.set(id, (message) => {
            clearTimeout(timer);
            resolve(message);
          });
          tell({ type: "metrics-wanted", id }).catch((error: unknown) => {
            clearTimeout(timer);
            reject(error);
          });
        });
        if ("error" in answer) throw new Error(`the supervisor could not sum the workers' metrics: ${answer.error}`);
        return answer.text;
      } finally {
        scrapes.delete(id);
      }
    },
  };
}
