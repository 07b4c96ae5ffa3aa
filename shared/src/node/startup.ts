import { setImmediate as nextLoopTurn } from "node:timers/promises";

/**
 * A service's start-up, step by step, stopped by a signal at any moment. Each step that waits (a database,
 * Redis, a lookup) is raced against the stop, so one that hangs does not hold the process; what the
 * finished steps opened is closed, newest first; and the port is never opened once the stop has come.
 */
export interface Startup {
  /** Waits for `work`, or rejects with StartupStopped at once when the stop comes first; `close` is then
   * called on what `work` yields if it yields after all, and registered for the later steps otherwise. */
  step<T>(name: string, work: Promise<T>, close?: (value: T) => unknown): Promise<T>;
  /** Registers something opened without waiting (a lazy client), closed if start-up stops later. */
  opened(close: () => unknown): void;
  /**
   * The last check before a port is opened: one turn of the event loop first, so that a signal the kernel
   * has delivered but Node has not yet handled (start-up runs on resolved promises, which go before it)
   * is seen here and not after the port is open.
   */
  beforeListen(): Promise<void>;
  /** Start-up is done: nothing is closed by this object any more. */
  done(): void;
}

/** Start-up was stopped by a signal before it finished; `step` says where. */
export class StartupStopped extends Error {
  readonly step: string;

  constructor(step: string) {
    super(`start-up stopped during ${step}`);
    this.step = step;
    this.name = "StartupStopped";
  }
}

/** A start-up stopped by `signal`; without one (tests), every step simply runs. */
export function createStartup(signal?: AbortSignal): Startup {
  const closers: Array<() => unknown> = [];
  let closing: Promise<void> | undefined;
  let finished = false;

  // Newest first, each once, a failure in one not stopping the others.
  const closeOpened = (): Promise<void> => {
    closing ??= (async () => {
      while (closers.length > 0) {
        const close = closers.pop();
        try {
          await close?.();
        } catch {
          // Start-up is being abandoned; the process exits next.
        }
      }
    })();
    return closing;
  };

  const stopIfAsked = async (step: string) => {
    if (!signal?.aborted || finished) return;
    await closeOpened();
    throw new StartupStopped(step);
  };

  return {
    async step(name, work, close) {
      await stopIfAsked(name);
      if (!signal) return work;
      let onAbort: (() => void) | undefined;
      const stopped = new Promise<never>((_, reject) => {
        onAbort = () => reject(new StartupStopped(name));
        // It may have come while this step waited for the check above.
        if (signal.aborted) onAbort();
        else signal.addEventListener("abort", onAbort, { once: true });
      });
      try {
        const value = await Promise.race([work, stopped]);
        if (close) closers.push(() => close(value));
        await stopIfAsked(name);
        return value;
      } catch (error) {
        if (error instanceof StartupStopped) {
          // The step may still finish: what it opens then is closed at once.
          if (close) void work.then((value) => close(value)).catch(() => {});
          else void work.catch(() => {});
          await closeOpened();
        }
        throw error;
      } finally {
        if (onAbort) signal.removeEventListener("abort", onAbort);
      }
    },
    opened(close) {
      closers.push(close);
    },
    async beforeListen() {
      await nextLoopTurn();
      await stopIfAsked("listen");
    },
    done() {
      finished = true;
      closers.length = 0;
    },
  };
}
