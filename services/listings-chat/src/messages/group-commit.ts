import { sqlStateOf, timedOut } from "../db/retry.ts";
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

/**
 * True when one bad send may have failed the batch, so that storing its sends one by one is both safe and
 * useful: PostgreSQL refused the statement and rolled it back, for a reason that is not the database being
 * busy.
 */
function worthStoringAlone(error: unknown): boolean {
  const code = sqlStateOf(error);
  // Without a SQLSTATE (a lost connection) or with 08xxx/57Pxx the commit may have happened: a retry could
  // store a message twice.
  if (code === undefined || code.startsWith("08") || code.startsWith("57P")) return false;
  // A lock or statement time-out (or a server out of resources, 53xxx) says nothing about any one send: split
  // into 64 calls on a pool of 10, the batch would only wait 64 times as long in the same queue.
  return !timedOut(error) && !code.startsWith("53");
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
      if (!worthStoringAlone(error)) {
        for (const w of batch) w.reject(error);
        return;
      }
      // A bad send (or a deadlock between two batches on one client_msg_id, left after the store's own retry)
      // must not fail the others.
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
