/**
 * SIGTERM and SIGINT, caught from the first line of a service's main.ts, before anything else loads.
 * Loading a service (its modules, then migrations) takes a while, and a process with no handler for a
 * signal gets the default: killed on the spot, or, as PID 1 of a container without an init, the signal
 * is ignored and the orchestrator waits out its grace period. This module imports nothing, so that it can
 * be installed before the rest of the service is even read.
 */
export type StopSignal = "SIGTERM" | "SIGINT";

export interface StopSignals {
  /** The first signal received so far, if any. */
  readonly received: StopSignal | undefined;
  /** Calls `handler` once, at the first signal: at once when one came already. Later signals are ignored. */
  onFirst(handler: (signal: StopSignal) => void): void;
}

export function catchStopSignals(): StopSignals {
  let received: StopSignal | undefined;
  let handler: ((signal: StopSignal) => void) | undefined;
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.on(signal, () => {
      if (received) return;
      received = signal;
      handler?.(signal);
    });
  }
  return {
    get received() {
      return received;
    },
    onFirst(next) {
      handler = next;
      if (received) next(received);
    },
  };
}
