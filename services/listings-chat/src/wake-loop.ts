export interface WakeLoopOptions {
  /** Does the work waiting in the database until none is left, or until `isStopped()` says to stop. */
  drain: (isStopped: () => boolean) => Promise<void>;
  /** A drain failed: its batch rolled back, and the next wake or poll does it again, here or elsewhere. */
  onError: (error: unknown) => void;
  /** How often to look for work that no instance is doing (one left by an instance that stopped or died). */
  pollMs: number;
}

export type WakeLoop = ReturnType<typeof createWakeLoop>;

/**
 * Work recorded in the database that any instance may do (listing fan-outs, erasures): drained when this instance
 * records some (`wake`), and every `pollMs` for what another instance left. One drain at a time per instance; a
 * wake during a drain runs one more after it, so work recorded meanwhile is never left waiting for the poll.
 */
export function createWakeLoop({ drain, onError, pollMs }: WakeLoopOptions) {
  let running: Promise<void> | undefined;
  let wokenAgain = false;
  let stopped = false;
  let poll: NodeJS.Timeout | undefined;
  const isStopped = () => stopped;

  function wake() {
    if (stopped) return;
    if (running) {
      wokenAgain = true;
      return;
    }
    running = (async () => {
      do {
        wokenAgain = false;
        try {
          await drain(isStopped);
        } catch (error) {
          onError(error);
        }
      } while (wokenAgain && !stopped);
    })().finally(() => {
      running = undefined;
    });
  }

  return {
    /** Looks for work now and every `pollMs`. */
    start() {
      wake();
      poll = setInterval(wake, pollMs);
      poll.unref();
    },
    wake,
    /** Stops after the batch under way; the rest is left for any instance. */
    async stop() {
      stopped = true;
      if (poll) clearInterval(poll);
      await running;
    },
  };
}
