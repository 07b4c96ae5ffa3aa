import type { AddressedEvent } from "../events/log.ts";

export interface SequencerOptions {
  /** Events up to this id are history: dropped when the bus brings them. */
  startAfter: number;
  /**
   * Reads a page of `after < id <= upTo` from the stream, to fill a gap the bus left; `more` when the page
   * stopped before `upTo` (pages are bounded, so a long gap is read, and delivered, a page at a time).
   */
  fetchRange: (after: number, upTo: number) => Promise<{ events: AddressedEvent[]; more: boolean }>;
  deliver: (addressed: AddressedEvent) => void;
  onError: (error: unknown) => void;
  /** How long an out-of-order event waits for the ones before it before they are read from the stream. */
  gapTimeoutMs?: number;
}

/**
 * Turns what the bus brings (possibly out of order, possibly with holes when a publisher died after
 * its commit) into the exact sequence of one user's stream. A stream's ids are dense (events/log.ts), so
 * a missing id is always a real gap: it waits briefly for the bus, then reads the stream.
 */
export function createEventSequencer(options: SequencerOptions) {
  const gapTimeoutMs = options.gapTimeoutMs ?? 200;
  let next = options.startAfter + 1;
  const waiting = new Map<number, AddressedEvent>();
  let gapTimer: NodeJS.Timeout | undefined;
  let stopped = false;
  /** A read of the stream is running: one at a time (a long gap takes many pages, a busy database long). */
  let reading = false;

  function drain() {
    if (stopped) return;
    for (let item = waiting.get(next); item; item = waiting.get(next)) {
      waiting.delete(next);
      next += 1;
      options.deliver(item);
    }
    if (waiting.size === 0 && gapTimer) {
      clearTimeout(gapTimer);
      gapTimer = undefined;
    } else if (waiting.size > 0 && !gapTimer && !reading) {
      gapTimer = setTimeout(fillGap, gapTimeoutMs);
    }
  }

  /**
   * Reads the stream from what was delivered up to `upTo`, page by page, delivering as it goes. Skipped
   * while another read runs; the gap timer is started again (by drain) once it is over, if still needed.
   */
  async function readUpTo(upTo: number) {
    if (reading) return;
    reading = true;
    try {
      while (!stopped && next <= upTo) {
        const from = next;
        const { events, more } = await options.fetchRange(next - 1, upTo);
        for (const item of events) accept(item);
        // A page that moved nothing on would be read again for ever.
        if (!more || next === from) break;
      }
    } catch (error) {
      options.onError(error);
    } finally {
      reading = false;
    }
  }

  async function fillGap() {
    gapTimer = undefined;
    if (waiting.size === 0) return;
    let first = Number.POSITIVE_INFINITY;
    for (const id of waiting.keys()) first = Math.min(first, id);
    await readUpTo(first - 1);
    drain();
  }

  function accept(item: AddressedEvent) {
    if (stopped) return;
    if (item.event.event_id < next) return;
    waiting.set(item.event.event_id, item);
    drain();
  }

  return {
    accept,
    /** Reads from the stream every event up to `end` not delivered yet (a lost publish at the tail has no later event to reveal it). */
    async catchUp(end: number) {
      if (stopped || end < next) return;
      await readUpTo(end);
      drain();
    },
    /** The last event id handed on: everything up to it has been delivered, in order. */
    delivered: () => next - 1,
    stop() {
      stopped = true;
      if (gapTimer) clearTimeout(gapTimer);
      gapTimer = undefined;
      waiting.clear();
    },
  };
}
