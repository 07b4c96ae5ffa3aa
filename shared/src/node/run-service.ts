import { setImmediate as nextLoopTurn } from "node:timers/promises";
import type { Logger } from "pino";
import { ConfigError } from "./config.ts";
import { createLogger } from "./logger.ts";
import { StartupStopped } from "./startup.ts";
import type { StopSignals } from "./stop-signals.ts";
import { startTracing, type TracingOptions } from "./tracing.ts";

export interface ServiceConfig {
  production: boolean;
  logLevel: string;
  warnings: string[];
  /** OpenTelemetry tracing; off without an endpoint. */
  tracing?: TracingOptions;
}

export interface RunServiceOptions<C extends ServiceConfig> {
  name: string;
  loadConfig: () => C;
  /** Builds and starts the service; `signal` aborts at a stop signal during start-up (see startup.ts). */
  start: (config: C, log: Logger, signal: AbortSignal) => Promise<{ stop(): Promise<void> }>;
  /** A line to log when a signal arrives, with what is still open. */
  stoppingMessage?: string;
  /** The variable that sets the port, named when the port is taken. */
  portVariable?: string;
  /** SIGTERM/SIGINT, caught by main.ts before the service was loaded (stop-signals.ts). */
  signals: StopSignals;
}

/** Hard stop if a graceful one hangs: the contract promises an exit within 10 s of SIGTERM. */
const HARD_EXIT_MS = 9_500;
/**
 * How long a signal that comes during start-up waits for the start to stop itself (each step is raced
 * against the signal, startup.ts) before the process exits without it: a start that has not listened yet
 * has served nothing, and the orchestrator should not wait out its grace period for it.
 */
const START_WAIT_MS = 2_000;

/** One line for a listen error a person can act on, or undefined for anything else. */
function listenProblem(error: unknown, portVariable: string | undefined): string | undefined {
  const { code, address, port } = error as { code?: string; address?: string; port?: number };
  const where = port === undefined ? "its port" : `${address ?? ""}:${port}`;
  const fix = portVariable ? `, or set ${portVariable} to another port` : "";
  if (code === "EADDRINUSE") return `cannot listen on ${where}: the address is in use (stop what listens there${fix})`;
  if (code === "EACCES") return `cannot listen on ${where}: permission denied (use a port above 1023${fix})`;
  if (code === "EADDRNOTAVAIL") return `cannot listen on ${where}: no such address on this machine`;
  return undefined;
}

/**
 * The body of a service's main.ts, once it has caught the stop signals and loaded the service:
 * configuration (one line and exit 1 when bad), logger, start, and the first SIGTERM/SIGINT handled once
 * (graceful stop, exit 0; exit 1 if it fails or hangs). A signal that came while the service was loading
 * ends it before anything starts; one during start-up aborts the start, which closes what it opened and
 * never opens the port (exit 0; START_WAIT_MS at most); one after start-up stops the service.
 */
export async function runService<C extends ServiceConfig>(options: RunServiceOptions<C>): Promise<void> {
  const { signals } = options;
  // A signal that came while the service's modules loaded (one synchronous stretch on current Node) is
  // handled on the next turn of the event loop: take that turn before looking.
  await nextLoopTurn();
  if (signals.received) {
    console.error(`${options.name}: ${signals.received} before start-up: exiting`);
    process.exit(0);
  }
  let config: C;
  try {
    config = options.loadConfig();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`${options.name}: ${error.message}`);
    process.exit(1);
  }
  const log = createLogger({ name: options.name, level: config.logLevel, pretty: !config.production });
  for (const warning of config.warnings) log.warn(`⚠ ${warning}`);

  // Before the service starts, so that its first requests are traced; flushed after it stops.
  const tracing = config.tracing ? startTracing(config.tracing) : undefined;
  const startup = new AbortController();
  const starting = options.start(config, log, startup.signal).catch((error: unknown) => {
    if (error instanceof StartupStopped) {
      log.info({ step: error.step }, `${options.name} stopped during start-up (${error.step}): exiting`);
      process.exit(0);
    }
    const problem = listenProblem(error, options.portVariable);
    if (problem) console.error(`${options.name}: ${problem}`);
    else log.fatal({ err: error }, `${options.name} could not start`);
    process.exit(1);
  });

  let started = false;
  void starting.then(() => {
    started = true;
  });
  signals.onFirst((signal) => {
    log.info({ signal }, options.stoppingMessage ?? "shutting down");
    setTimeout(() => process.exit(1), HARD_EXIT_MS).unref();
    if (!started) {
      startup.abort();
      setTimeout(() => {
        if (started) return;
        log.warn({ signal }, `${options.name} was still starting ${START_WAIT_MS} ms after ${signal}: exiting`);
        process.exit(0);
      }, START_WAIT_MS).unref();
    }
    starting
      .then((service) => service.stop())
      .then(() => tracing?.shutdown())
      .then(
        () => process.exit(0),
        (error) => {
          log.error({ err: error }, "shutdown failed");
          process.exit(1);
        },
      );
  });
  await starting;
}
