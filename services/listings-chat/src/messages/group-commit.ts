import type { SendOutcome, SendRequest } from "./repository.ts";

/**
 * Group commit: concurrent sends are stored together, in one call and one transaction, so that a busy
 * instance pays one round trip and one commit for many messages instead of one each.
 */
export interface GroupCommitOptions {
  /**
   * How long the first send of a batch waits for company, in milliseconds. 0: no timer, only the sends that
   * arrived in the same turn of the event loop (one socket read can carry many frames) go together.
   */
  maxWaitMs: number;
  /** A batch this big is stored at once. 1 turns group commit off: each send is its own transaction. */
  maxBatch: number;
}

export const defaultGroupCommit: GroupCommitOptions = { maxWaitMs: 0, maxBatch: 64 };

export type StoreBatch = (sends: readonly SendRequest[]) => Promise<SendOutcome[]>;

interface Waiting {
  send: SendRequest;
  resolve: (outcome: SendOutcome) => void;
  reject: (error: unknown) => void;
}

/** True when PostgreSQL refused the statement and rolled it back, so storing the sends again is safe. */
function rolledBack(error: unknown): boolean {
  // drizzle wraps the driver's error; the SQLSTATE is on the driver's.
  const cause = (error as { cause?: unknown })?.cause ?? error;
  const code = (cause as { code?: unknown })?.code;
  // Without a SQLSTATE (a lost connection) or with 08xxx/57Pxx the commit may have happened: a retry could
  // store a message twice.
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) && !code.startsWith("08") && !code.startsWith("57P");
}

function schedule(work: () => void, delayMs: number): () => void {
  if (delayMs > 0) {
    const timer = setTimeout(work, delayMs);
    return () => clearTimeout(timer);
  }
  const immediate = setImmediate(work);
  return () => clearImmediate(immediate);
}

/** Each send resolves only after the transaction that stored it has committed. */
export function createGroupCommit(store: StoreBatch, options: GroupCommitOptions) {
  let waiting: Waiting[] = [];
  /** Cancels the pending flush, when one is scheduled. */
  let cancelFlush: (() => void) | undefined;

  async function storeAlone({ send, resolve, reject }: Waiting) {
    try {
      const [outcome] = await store([send]);
      resolve(outcome!);
    } catch (error) {
      reject(error);
    }
  }

  async function storeTogether(batch: Waiting[]) {
    if (batch.length === 1) return storeAlone(batch[0]!);
    try {
      const outcomes = await store(batch.map((w) => w.send));
      for (const [i, w] of batch.entries()) w.resolve(outcomes[i]!);
    } catch (error) {
      if (!rolledBack(error)) {
        for (const w of batch) w.reject(error);
        return;
      }
      // A bad send (or a deadlock between two batches on one client_msg_id) must not fail the others.
      await Promise.all(batch.map(storeAlone));
    }
  }

  function flush() {
    cancelFlush?.();
    cancelFlush = undefined;
    const batch = waiting;
    waiting = [];
    void storeTogether(batch);
  }

  return {
    submit(send: SendRequest): Promise<SendOutcome> {
      return new Promise((resolve, reject) => {
        waiting.push({ send, resolve, reject });
        if (waiting.length >= options.maxBatch) flush();
        else if (!cancelFlush) cancelFlush = schedule(flush, options.maxWaitMs);
      });
    },
  };
}
