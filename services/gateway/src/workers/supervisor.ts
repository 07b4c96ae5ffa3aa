/**
 * GATEWAY_WORKERS > 1: this process starts that many gateway processes (workers) on the one host:port,
 * each listening with SO_REUSEPORT, so that the kernel spreads connections over their event loops, as
 * nginx runs workers. The supervisor serves nothing itself and never loads the gateway's modules (its
 * memory and start-up stay small); it
 * - starts worker 1 first: a bad variable or a taken port is then printed once, by it, and the supervisor
 *   exits with its code; the others start once it listens, on the port it got (GATEWAY_PORT=0 works);
 * - forwards SIGTERM/SIGINT to every worker (in a container only PID 1, or tini's child, gets them) and
 *   exits 0 once all have drained and exited, 1 if one failed to, within 10 s of the signal;
 * - starts a worker again, after a backoff, when it dies while serving;
 * - answers a worker's scrape of /metrics with the sum of every serving worker's metrics.
 *
 * Workers are `child_process.fork`s, not `node:cluster` workers: a cluster worker's listen() goes through
 * the primary (which accepts and hands out connections, or shares one socket), the very thing reusePort
 * replaces; a fork listens on its own socket, and its IPC channel is all the supervisor needs.
 */
import { type ChildProcess, fork } from "node:child_process";
import { hostname } from "node:os";
import type { StopSignal, StopSignals } from "@listings-chat/shared/node/stop-signals";
import { isMessage, type SupervisorMessage, type WorkerMessage } from "./messages.ts";
import { WORKER_ARGUMENT } from "./role.ts";

/** After a stop signal, workers exit by 9.5 s (run-service.ts); one still running at this point is killed. */
const HARD_EXIT_MS = 9_700;
/** How long a worker that died is left down before it starts again, doubling while it keeps dying young. */
export const RESTART_BACKOFF = { firstMs: 250, maxMs: 10_000 } as const;
/** A worker that served this long before it died starts again after the first backoff. */
const SERVED_LONG_ENOUGH_MS = 30_000;
/** How long a scrape waits for every worker's metrics: one that does not answer is left out (and counted). */
const METRICS_COLLECT_MS = 2_000;

type Level = "info" | "warn" | "error";
/** One log line of the supervisor's own. */
export type SupervisorLog = (level: Level, fields: Record<string, unknown>, message: string) => void;

/** pino's JSON lines (the same fields as the workers' logs), `role: "supervisor"`; info only at LOG_LEVEL info and below. */
export function supervisorLog(logLevel: string | undefined): SupervisorLog {
  const numbers: Record<Level, number> = { info: 30, warn: 40, error: 50 };
  const quietBelow = { warn: 40, error: 50, fatal: 60, silent: 100 }[logLevel ?? ""] ?? 30;
  const host = hostname();
  return (level, fields, msg) => {
    if (numbers[level] < quietBelow) return;
    const line = { level: numbers[level], time: Date.now(), pid: process.pid, hostname: host, name: "gateway" };
    process.stdout.write(`${JSON.stringify({ ...line, role: "supervisor", ...fields, msg })}\n`);
  };
}

export interface SupervisorOptions {
  /** How many workers (GATEWAY_WORKERS, more than 1). */
  count: number;
  /** The module each worker runs, given `--gateway-worker=<n>`: main.ts, or the bundle's main.js. */
  entry: string;
  /** SIGTERM/SIGINT, caught by main.ts before anything loaded. */
  signals: StopSignals;
  /** The workers' environment. */
  env: NodeJS.ProcessEnv;
  log: SupervisorLog;
  /** Ends the process (tests replace it). */
  exit?: (code: number) => void;
}

interface Worker {
  number: number;
  child: ChildProcess;
  startedAt: number;
  /** Resolves true once it listens, false when it exits (or cannot be started) before. */
  listening: Promise<boolean>;
  serving: boolean;
}

export function superviseWorkers(options: SupervisorOptions): void {
  const { count, log, signals } = options;
  const exit = options.exit ?? ((code: number) => process.exit(code));
  const workers = new Map<number, Worker>();
  const restarts = new Map<number, NodeJS.Timeout>();
  /** Deaths in a row of each worker number, each soon after its start: the backoff doubles with them. */
  const youngDeaths = new Map<number, number>();
  let restartCount = 0;
  let port: number | undefined;
  let phase: "starting" | "serving" | "stopping" = "starting";
  let stopSignal: StopSignal | undefined;
  let exitCode = 0;
  let collectionIds = 0;
  const collections = new Map<number, { parts: unknown[][]; waiting: Set<number>; done: () => void }>();

  // A function, so that TypeScript does not take `phase` for constant across the awaits of the start-up.
  const stopping = () => phase === "stopping";
  const finishIfAllExited = () => {
    if (phase === "stopping" && workers.size === 0) exit(exitCode);
  };

  const start = (number: number): Worker => {
    const env = port === undefined ? options.env : { ...options.env, GATEWAY_PORT: String(port) };
    const child = fork(options.entry, [`${WORKER_ARGUMENT}=${number}`], { env, serialization: "advanced" });
    let listened: (ok: boolean) => void = () => {};
    const worker: Worker = {
      number,
      child,
      startedAt: Date.now(),
      listening: new Promise((resolve) => {
        listened = resolve;
      }),
      serving: false,
    };
    workers.set(number, worker);
    child.on("message", (message: unknown) => {
      if (!isMessage<WorkerMessage>(message)) return;
      if (message.type === "listening") {
        port ??= message.port;
        worker.serving = true;
        listened(true);
      } else if (message.type === "metrics-wanted") {
        void answerScrape(worker, message.id);
      } else if (message.type === "metrics-part") {
        const collection = collections.get(message.id);
        if (!collection?.waiting.delete(number)) return;
        collection.parts.push(message.metrics);
        if (collection.waiting.size === 0) collection.done();
      }
    });
    const exited = (code: number | null, signal: NodeJS.Signals | null) => {
      if (workers.get(number) !== worker) return;
      workers.delete(number);
      listened(false);
      for (const collection of collections.values()) {
        if (collection.waiting.delete(number) && collection.waiting.size === 0) collection.done();
      }
      if (phase === "stopping") {
        // One the signal ended before it had even caught signals (its first instants) had served nothing.
        const clean = code === 0 || (!worker.serving && signal === stopSignal);
        if (!clean) {
          exitCode = 1;
          log("error", { worker: number, pid: child.pid, code, signal }, "worker did not stop cleanly");
        }
        finishIfAllExited();
      } else if (phase === "serving" || worker.serving) {
        // Serving, or started again after it died while serving (and died again before it listened).
        restartLater(worker, code, signal);
      }
      // A worker of the start that exits before it listens: the start-up below stops.
    };
    child.once("exit", exited);
    // A process that cannot even be created (no such entry, out of pids): no exit event follows.
    child.once("error", (error) => {
      log("error", { worker: number, err: error.message }, "worker could not be started");
      if (child.exitCode === null && child.signalCode === null && child.pid === undefined) exited(1, null);
    });
    return worker;
  };

  const restartLater = (worker: Worker, code: number | null, signal: NodeJS.Signals | null) => {
    const { number } = worker;
    const young = Date.now() - worker.startedAt < SERVED_LONG_ENOUGH_MS;
    const deaths = young ? (youngDeaths.get(number) ?? 0) + 1 : 1;
    youngDeaths.set(number, deaths);
    const delayMs = Math.min(RESTART_BACKOFF.firstMs * 2 ** (deaths - 1), RESTART_BACKOFF.maxMs);
    const when = worker.serving ? "while serving" : "before it listened";
    log(
      "warn",
      { worker: number, pid: worker.child.pid, code, signal, restartInMs: delayMs },
      `worker ${number} exited ${when}: starting it again in ${delayMs} ms`,
    );
    restarts.set(
      number,
      setTimeout(() => {
        restarts.delete(number);
        if (phase === "stopping") return;
        restartCount += 1;
        const next = start(number);
        void next.listening.then((ok) => {
          if (ok) log("info", { worker: number, pid: next.child.pid }, `worker ${number} listens again`);
        });
      }, delayMs),
    );
  };

  const stop = (signal: StopSignal, why: string) => {
    if (phase === "stopping") return;
    phase = "stopping";
    stopSignal = signal;
    log("info", { signal, workers: workers.size }, why);
    for (const timer of restarts.values()) clearTimeout(timer);
    restarts.clear();
    for (const worker of workers.values()) worker.child.kill(signal);
    setTimeout(() => {
      for (const worker of workers.values()) {
        log("error", { worker: worker.number, pid: worker.child.pid }, "worker still running: killing it");
        worker.child.kill("SIGKILL");
      }
      exit(1);
    }, HARD_EXIT_MS).unref();
    finishIfAllExited();
  };

  /** Every serving worker's metrics, summed (prom-client's cluster aggregation), and the supervisor's own. */
  const collectMetrics = async (): Promise<string> => {
    const id = ++collectionIds;
    const serving = [...workers.values()].filter((worker) => worker.serving && worker.child.connected);
    const parts: unknown[][] = [];
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, METRICS_COLLECT_MS);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      collections.set(id, { parts, waiting: new Set(serving.map((worker) => worker.number)), done });
      if (serving.length === 0) done();
      for (const worker of serving) send(worker, { type: "metrics-collect", id });
    });
    collections.delete(id);
    // Loaded at the first scrape only: the supervisor stays small until metrics are asked for.
    const { AggregatorRegistry, Counter, Gauge, Registry } = await import("prom-client");
    const own = new Registry();
    new Gauge({ name: "listings_chat_gateway_workers", help: "GATEWAY_WORKERS", registers: [own] }).set(count);
    new Gauge({
      name: "listings_chat_gateway_workers_reporting",
      help: "Workers whose metrics are summed in this scrape (fewer than listings_chat_gateway_workers while one restarts)",
      registers: [own],
    }).set(parts.length);
    new Counter({
      name: "listings_chat_gateway_worker_restarts_total",
      help: "Workers started again after they died while serving",
      registers: [own],
    }).inc(restartCount);
    return Registry.merge([AggregatorRegistry.aggregate(parts), own]).metrics();
  };

  const answerScrape = async (worker: Worker, id: number) => {
    try {
      send(worker, { type: "metrics-all", id, text: await collectMetrics() });
    } catch (error) {
      send(worker, { type: "metrics-all", id, error: (error as Error).message });
    }
  };

  const send = (worker: Worker, message: SupervisorMessage) => {
    if (!worker.child.connected) return;
    worker.child.send(message, (error) => {
      // It is exiting: its exit takes it out of the collections.
      if (error) log("warn", { worker: worker.number, err: error.message }, "could not reach a worker");
    });
  };

  signals.onFirst((signal) => stop(signal, `${signal}: stopping the workers, letting their pipes drain`));

  void (async () => {
    const first = start(1);
    if (!(await first.listening)) {
      // It said why (one line, as a gateway alone would); a stop signal during start-up exits 0.
      if (!stopping()) exit(first.child.exitCode ?? 1);
      return;
    }
    if (stopping()) return;
    const others = Array.from({ length: count - 1 }, (_, i) => start(i + 2));
    const listening = await Promise.all(others.map((worker) => worker.listening));
    if (stopping()) return;
    const failed = others.filter((_, i) => !listening[i]).map((worker) => worker.number);
    if (failed.length > 0) {
      exitCode = 1;
      stop("SIGTERM", `worker ${failed.join(", ")} could not start: stopping the others`);
      return;
    }
    phase = "serving";
    log(
      "info",
      { workers: count, port, pids: [first, ...others].map((w) => w.child.pid) },
      `${count} workers listening`,
    );
  })();
}
