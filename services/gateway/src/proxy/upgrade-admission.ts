/** The answer to a request for an upgrade slot at one chat instance. */
export type Admission =
  /** A slot: give it back with `release()` once the instance answered (or failed). */
  | { kind: "admitted"; release: () => void }
  /**
   * The queue is full, or its wait is already longer than `maxWaitMs`: refused now rather than letting the
   * client wait for a slot it would get too late (a browser gives up on a connect after a few seconds).
   */
  | { kind: "full" }
  /** The instance was found dead while this one waited, or the client left: no slot. */
  | { kind: "withdrawn" };

export interface UpgradeAdmissionOptions {
  /** Upgrade hops to the instance at the same time. */
  inFlightMax: number;
  /** Upgrades waiting for a slot; past it, refused at once. */
  queueMax: number;
  /** The longest expected wait for a slot that is still worth queueing for; past it, refused at once. */
  maxWaitMs: number;
  now?: () => number;
}

interface Waiter {
  settle(admission: Admission): void;
}

/**
 * Bounded concurrency of the gateway's upgrade hops to one chat instance, with a FIFO queue in front.
 *
 * In a reconnect storm thousands of upgrades reach the gateway within a second. Sent on at once, they
 * swamp the instance (and both event loops) so that answers come late and the gateway times out a live
 * instance. Held here instead, at most `inFlightMax` are at the instance at a time, each is answered in
 * milliseconds, the rest are served in order as slots free up, and the hop's time-out again means what it
 * says: no answer from an instance that had little to do.
 */
export class UpgradeAdmission {
  private active = 0;
  private readonly queue: Array<Waiter | undefined> = [];
  private head = 0;
  /** Waiters in the queue that have not left (the queue also holds the holes of those that did). */
  private queued = 0;
  /**
   * How often a slot comes free while upgrades wait, as a moving average: how fast the queue moves, whatever
   * limits it (the instance, or this gateway's own event loop). Measured only while someone waits, when the
   * release rate is the service rate; 0 until then, so the first waiters of a storm are never refused on a guess.
   */
  private releaseGapMs = 0;
  private lastReleaseWhileWaiting: number | undefined;
  private readonly now: () => number;
  private readonly options: UpgradeAdmissionOptions;

  constructor(options: UpgradeAdmissionOptions) {
    this.options = options;
    this.now = options.now ?? (() => performance.now());
  }

  /** How long a new arrival would wait for a slot: the queue ahead of it, served at the measured rate. */
  get expectedWaitMs(): number {
    // The first in line is always let in: an old, slow measure must not shut the queue for good.
    return this.queued === 0 ? 0 : (this.queued + 1) * this.releaseGapMs;
  }

  /** Upgrades waiting for a slot. */
  get waiting(): number {
    return this.queued;
  }

  /** Upgrades at the instance now. */
  get inFlight(): number {
    return this.active;
  }

  /** A slot now, or in turn; `withdrawn` when `signal` aborts first (the client left). */
  acquire(signal: AbortSignal): Promise<Admission> {
    if (signal.aborted) return Promise.resolve({ kind: "withdrawn" });
    if (this.active < this.options.inFlightMax && this.queued === 0) {
      this.active += 1;
      return Promise.resolve({ kind: "admitted", release: this.releaser() });
    }
    if (this.queued >= this.options.queueMax || this.expectedWaitMs > this.options.maxWaitMs)
      return Promise.resolve({ kind: "full" });
    return new Promise((resolve) => {
      const index = this.queue.length;
      const onAbort = () => {
        // Left in place as a hole, skipped when its turn comes: the queue stays O(1) per step.
        this.queue[index] = undefined;
        this.queued -= 1;
        resolve({ kind: "withdrawn" });
      };
      this.queued += 1;
      this.queue.push({
        settle: (admission) => {
          signal.removeEventListener("abort", onAbort);
          resolve(admission);
        },
      });
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Withdraws every waiting upgrade (the instance was found dead): each goes on to the next instance. */
  withdrawAll(): void {
    const waiters = this.queue.splice(this.head);
    this.queue.length = 0;
    this.head = 0;
    this.queued = 0;
    this.lastReleaseWhileWaiting = undefined;
    this.releaseGapMs = 0;
    for (const waiter of waiters) waiter?.settle({ kind: "withdrawn" });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.measureRelease();
      this.active -= 1;
      this.grantNext();
    };
  }

  private measureRelease(): void {
    if (this.queued === 0) {
      // The queue is empty: the next one is measured afresh.
      this.lastReleaseWhileWaiting = undefined;
      this.releaseGapMs = 0;
      return;
    }
    const now = this.now();
    if (this.lastReleaseWhileWaiting !== undefined) {
      const gap = now - this.lastReleaseWhileWaiting;
      this.releaseGapMs = this.releaseGapMs === 0 ? gap : this.releaseGapMs * 0.9 + gap * 0.1;
    }
    this.lastReleaseWhileWaiting = now;
  }

  private grantNext(): void {
    while (this.active < this.options.inFlightMax && this.head < this.queue.length) {
      const waiter = this.queue[this.head];
      this.queue[this.head] = undefined;
      this.head += 1;
      if (!waiter) continue;
      this.queued -= 1;
      this.active += 1;
      waiter.settle({ kind: "admitted", release: this.releaser() });
    }
    // Compacted once drained, so that the array does not grow through a long run of storms.
    if (this.head === this.queue.length) {
      this.queue.length = 0;
      this.head = 0;
    }
  }
}
