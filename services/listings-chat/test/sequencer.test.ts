import type { ChatEvent } from "@listings-chat/shared";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { AddressedEvent } from "../src/events/log.ts";
import { createEventSequencer, type SequencerOptions } from "../src/hub/sequencer.ts";

/** A minimal event of user 1's stream with the given id (the sequencer only looks at `event_id`). */
function ev(id: number, userId = 1): AddressedEvent {
  const event: ChatEvent = {
    type: "message_read",
    event_id: id,
    chat_id: 1,
    message_id: id,
    read_by: 1,
    read_at: new Date(0).toISOString(),
  };
  return { userId, event };
}

const GAP_MS = 200;

/** A sequencer whose deliveries, fetches and errors are recorded. */
function setup(overrides: Partial<SequencerOptions> = {}) {
  const delivered: AddressedEvent[] = [];
  const fetchRange = vi.fn<SequencerOptions["fetchRange"]>(async () => ({ events: [], more: false }));
  const onError = vi.fn<SequencerOptions["onError"]>();
  const sequencer = createEventSequencer({
    startAfter: 0,
    fetchRange,
    deliver: (item) => delivered.push(item),
    onError,
    gapTimeoutMs: GAP_MS,
    ...overrides,
  });
  return { sequencer, delivered, ids: () => delivered.map((d) => d.event.event_id), fetchRange, onError };
}

describe("createEventSequencer", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it("delivers events that arrive in order at once, without reading the log", async () => {
    const { sequencer, delivered, ids, fetchRange } = setup();
    const items = [ev(1), ev(2), ev(3)];
    sequencer.accept(items[0]!);
    expect(ids()).toEqual([1]);
    sequencer.accept(items[1]!);
    sequencer.accept(items[2]!);
    expect(ids()).toEqual([1, 2, 3]);
    // The very objects are handed on.
    expect(delivered).toEqual(items);
    expect(delivered[0]).toBe(items[0]);
    expect(sequencer.delivered()).toBe(3);
    await vi.advanceTimersByTimeAsync(GAP_MS * 5);
    expect(fetchRange).not.toHaveBeenCalled();
    expect(vi.getTimerCount()).toBe(0);
    sequencer.stop();
  });

  it("continues after startAfter", () => {
    const { sequencer, ids } = setup({ startAfter: 41 });
    expect(sequencer.delivered()).toBe(41);
    sequencer.accept(ev(42));
    sequencer.accept(ev(43));
    expect(ids()).toEqual([42, 43]);
    expect(sequencer.delivered()).toBe(43);
    sequencer.stop();
  });

  it("holds out-of-order events and delivers them in id order once the gap is filled by the bus", async () => {
    const { sequencer, ids, fetchRange } = setup();
    sequencer.accept(ev(3));
    sequencer.accept(ev(5));
    expect(ids()).toEqual([]);
    expect(sequencer.delivered()).toBe(0);

    sequencer.accept(ev(2));
    expect(ids()).toEqual([]);
    sequencer.accept(ev(1));
    expect(ids()).toEqual([1, 2, 3]);
    expect(sequencer.delivered()).toBe(3);

    sequencer.accept(ev(4));
    expect(ids()).toEqual([1, 2, 3, 4, 5]);
    expect(sequencer.delivered()).toBe(5);

    // Nothing is waiting any more: the gap timer is gone and the log is never read.
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(GAP_MS * 5);
    expect(fetchRange).not.toHaveBeenCalled();
    sequencer.stop();
  });

  it("drops duplicates and events at or before startAfter", () => {
    const { sequencer, ids } = setup({ startAfter: 5 });
    sequencer.accept(ev(3));
    sequencer.accept(ev(5));
    expect(ids()).toEqual([]);

    sequencer.accept(ev(6));
    sequencer.accept(ev(6));
    expect(ids()).toEqual([6]);

    // A duplicate of an event that is still waiting is delivered once too.
    sequencer.accept(ev(8));
    sequencer.accept(ev(8));
    sequencer.accept(ev(7));
    sequencer.accept(ev(7));
    sequencer.accept(ev(8));
    expect(ids()).toEqual([6, 7, 8]);
    expect(sequencer.delivered()).toBe(8);
    sequencer.stop();
  });

  it("reads a gap the bus never fills from the log after gapTimeoutMs, with the exact bounds", async () => {
    const onGapFill = vi.fn();
    const { sequencer, ids, fetchRange, onError } = setup({ startAfter: 10, onGapFill });
    fetchRange.mockImplementation(async (after, upTo) => {
      const out: AddressedEvent[] = [];
      for (let id = upTo; id > after; id--) out.push(ev(id)); // newest first: the sequencer must still order them
      return { events: out, more: false };
    });
    sequencer.accept(ev(11));
    sequencer.accept(ev(14));
    expect(ids()).toEqual([11]);

    await vi.advanceTimersByTimeAsync(GAP_MS - 1);
    expect(fetchRange).not.toHaveBeenCalled();
    expect(ids()).toEqual([11]);

    await vi.advanceTimersByTimeAsync(1);
    expect(fetchRange).toHaveBeenCalledTimes(1);
    // Everything after the last delivered id (11) up to just before the oldest waiting one (14).
    expect(fetchRange).toHaveBeenCalledWith(11, 13);
    expect(onGapFill).toHaveBeenCalledTimes(1); // counted: listings_chat_sequencer_gap_fills_total
    expect(ids()).toEqual([11, 12, 13, 14]);
    expect(sequencer.delivered()).toBe(14);
    expect(onError).not.toHaveBeenCalled();

    await vi.advanceTimersByTimeAsync(GAP_MS * 5);
    expect(fetchRange).toHaveBeenCalledTimes(1);
    sequencer.stop();
  });

  it("reads a long gap a bounded page at a time, delivering each page before reading the next", async () => {
    const { sequencer, ids, fetchRange } = setup({ startAfter: 0 });
    const deliveredAtRead: number[] = [];
    fetchRange.mockImplementation(async (after, upTo) => {
      deliveredAtRead.push(sequencer.delivered());
      const last = Math.min(upTo, after + 4);
      return { events: Array.from({ length: last - after }, (_, i) => ev(after + 1 + i)), more: last < upTo };
    });
    sequencer.accept(ev(11));
    await vi.advanceTimersByTimeAsync(GAP_MS);
    expect(fetchRange.mock.calls).toEqual([
      [0, 10],
      [4, 10],
      [8, 10],
    ]);
    expect(deliveredAtRead).toEqual([0, 4, 8]);
    expect(ids()).toEqual(Array.from({ length: 11 }, (_, i) => i + 1));
    sequencer.stop();
  });

  it("fills several gaps one after another, each with its own bounds", async () => {
    const { sequencer, ids, fetchRange } = setup({ startAfter: 0 });
    fetchRange.mockImplementation(async (after, upTo) => ({
      events: Array.from({ length: upTo - after }, (_, i) => ev(after + 1 + i)),
      more: false,
    }));
    sequencer.accept(ev(3));
    sequencer.accept(ev(7));
    await vi.advanceTimersByTimeAsync(GAP_MS);
    expect(fetchRange).toHaveBeenNthCalledWith(1, 0, 2);
    expect(ids()).toEqual([1, 2, 3]);

    // 4..6 are still missing in front of 7: a second wait, then a second read.
    await vi.advanceTimersByTimeAsync(GAP_MS);
    expect(fetchRange).toHaveBeenNthCalledWith(2, 3, 6);
    expect(fetchRange).toHaveBeenCalledTimes(2);
    expect(ids()).toEqual([1, 2, 3, 4, 5, 6, 7]);
    sequencer.stop();
  });

  it("does not deliver twice when the bus brings an event the log read also returned", async () => {
    const { sequencer, ids, fetchRange } = setup({ startAfter: 0 });
    let release!: () => void;
    fetchRange.mockImplementation(
      (after, upTo) =>
        new Promise((resolve) => {
          release = () =>
            resolve({ events: Array.from({ length: upTo - after }, (_, i) => ev(after + 1 + i)), more: false });
        }),
    );
    sequencer.accept(ev(3));
    await vi.advanceTimersByTimeAsync(GAP_MS);
    expect(fetchRange).toHaveBeenCalledWith(0, 2);
    // While the log read is in flight, the bus catches up.
    sequencer.accept(ev(1));
    sequencer.accept(ev(2));
    expect(ids()).toEqual([1, 2, 3]);
    release();
    await vi.advanceTimersByTimeAsync(0);
    expect(ids()).toEqual([1, 2, 3]);
    expect(sequencer.delivered()).toBe(3);
    sequencer.stop();
  });

  it("runs one log read at a time: a slow one is not joined by another every gapTimeoutMs", async () => {
    const { sequencer, ids, fetchRange } = setup({ startAfter: 0 });
    fetchRange.mockImplementation(
      (after, upTo) =>
        new Promise((resolve) =>
          setTimeout(
            () => resolve({ events: Array.from({ length: upTo - after }, (_, i) => ev(after + 1 + i)), more: false }),
            GAP_MS * 5,
          ),
        ),
    );
    sequencer.accept(ev(3));
    await vi.advanceTimersByTimeAsync(GAP_MS);
    expect(fetchRange).toHaveBeenCalledTimes(1);
    // Meanwhile the bus brings more, with another hole; and the tail check asks for a catch-up.
    sequencer.accept(ev(6));
    void sequencer.catchUp(6);
    await vi.advanceTimersByTimeAsync(GAP_MS * 4);
    expect(fetchRange).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(GAP_MS);
    expect(ids()).toEqual([1, 2, 3]);
    // The first read is over: the hole before 6 is read next, by one reader.
    await vi.advanceTimersByTimeAsync(GAP_MS * 6);
    expect(fetchRange).toHaveBeenCalledTimes(2);
    expect(fetchRange).toHaveBeenLastCalledWith(3, 5);
    expect(ids()).toEqual([1, 2, 3, 4, 5, 6]);
    sequencer.stop();
  });

  it("reports a failed log read to onError and retries it later", async () => {
    const { sequencer, ids, fetchRange, onError } = setup({ startAfter: 0 });
    const failure = new Error("database down");
    fetchRange.mockRejectedValueOnce(failure).mockImplementation(async () => ({ events: [ev(1)], more: false }));

    sequencer.accept(ev(2));
    await vi.advanceTimersByTimeAsync(GAP_MS);
    expect(fetchRange).toHaveBeenCalledTimes(1);
    expect(fetchRange).toHaveBeenLastCalledWith(0, 1);
    expect(onError).toHaveBeenCalledTimes(1);
    expect(onError).toHaveBeenCalledWith(failure);
    expect(ids()).toEqual([]);
    expect(sequencer.delivered()).toBe(0);

    // The retry waits another gapTimeoutMs.
    await vi.advanceTimersByTimeAsync(GAP_MS - 1);
    expect(fetchRange).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(fetchRange).toHaveBeenCalledTimes(2);
    expect(fetchRange).toHaveBeenLastCalledWith(0, 1);
    expect(ids()).toEqual([1, 2]);
    expect(onError).toHaveBeenCalledTimes(1);
    sequencer.stop();
  });

  it("keeps retrying a log read that returns nothing until the missing event can be read", async () => {
    const { sequencer, ids, fetchRange } = setup({ startAfter: 0 });
    fetchRange
      .mockResolvedValueOnce({ events: [], more: false })
      .mockResolvedValueOnce({ events: [], more: false })
      .mockResolvedValue({ events: [ev(1)], more: false });
    sequencer.accept(ev(2));
    await vi.advanceTimersByTimeAsync(GAP_MS * 2);
    expect(fetchRange).toHaveBeenCalledTimes(2);
    expect(ids()).toEqual([]);
    await vi.advanceTimersByTimeAsync(GAP_MS);
    expect(fetchRange).toHaveBeenCalledTimes(3);
    for (const call of fetchRange.mock.calls) expect(call).toEqual([0, 1]);
    expect(ids()).toEqual([1, 2]);
    sequencer.stop();
  });

  it("uses a 200 ms gap timeout by default", async () => {
    const { sequencer, fetchRange } = setup({ gapTimeoutMs: undefined });
    sequencer.accept(ev(2));
    await vi.advanceTimersByTimeAsync(199);
    expect(fetchRange).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(fetchRange).toHaveBeenCalledWith(0, 1);
    sequencer.stop();
  });

  it("stop() cancels a pending gap read", async () => {
    const { sequencer, fetchRange, ids } = setup({ startAfter: 0 });
    sequencer.accept(ev(2));
    expect(vi.getTimerCount()).toBe(1);
    sequencer.stop();
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(GAP_MS * 5);
    expect(fetchRange).not.toHaveBeenCalled();
    expect(ids()).toEqual([]);
  });
});
