import { describe, expect, it } from "vitest";
import { createReadCoalescing } from "../src/chats/read-coalescing.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A store that records each call (when, what) and answers with the id it stored, after `delayMs`. */
function recordingStore(delayMs = 5, fails?: (messageId: number) => Error | undefined) {
  const stores: { at: number; userId: number; chatId: number; messageId: number }[] = [];
  return {
    stores,
    async store(userId: number, chatId: number, messageId: number) {
      stores.push({ at: performance.now(), userId, chatId, messageId });
      await sleep(delayMs);
      const error = fails?.(messageId);
      if (error) throw error;
      return { stored: messageId };
    },
  };
}

describe("read markers coalesced per user and chat", () => {
  it("stores the first at once and the 1,999 that follow within the window as one store of their highest", async () => {
    const { stores, store } = recordingStore();
    const reading = createReadCoalescing({ windowMs: 300, store });
    const ids = Array.from({ length: 2_000 }, (_, i) => ((i * 7919) % 2_000) + 1); // 1..2000, shuffled
    const answers = await Promise.all(ids.map((id) => reading.markRead(1, 10, id)));
    expect(stores.map((s) => s.messageId)).toEqual([ids[0], 2_000]);
    // The first caller hears of its own store; every other one of the store that covered it.
    expect(answers[0]).toEqual({ stored: ids[0] });
    for (const answer of answers.slice(1)) expect(answer).toEqual({ stored: 2_000 });
    expect(stores[1]!.at - stores[0]!.at).toBeGreaterThanOrEqual(300);
    await sleep(350);
    expect(reading.pending()).toBe(0);
  });

  it("stores at most once per window per user and chat, however the markers are spread, the last the highest", async () => {
    const { stores, store } = recordingStore(2);
    const windowMs = 100;
    const reading = createReadCoalescing({ windowMs, store });
    const started = performance.now();
    const calls: Promise<unknown>[] = [];
    // 2,000 markers over about 5 windows, for two chats of one user and one chat of another.
    for (let wave = 0; wave < 20; wave++) {
      for (let i = 0; i < 100; i++) {
        const id = wave * 100 + i + 1;
        calls.push(reading.markRead(1, 10, id), reading.markRead(1, 11, id), reading.markRead(2, 10, id));
      }
      await sleep(25);
    }
    await Promise.all(calls);
    const windows = (performance.now() - started) / windowMs;
    for (const [userId, chatId] of [
      [1, 10],
      [1, 11],
      [2, 10],
    ]) {
      const mine = stores.filter((s) => s.userId === userId && s.chatId === chatId);
      expect(mine.length).toBeGreaterThanOrEqual(2);
      expect(mine.length).toBeLessThanOrEqual(Math.ceil(windows) + 1);
      for (let i = 1; i < mine.length; i++) expect(mine[i]!.at - mine[i - 1]!.at).toBeGreaterThanOrEqual(windowMs);
      expect(mine.at(-1)!.messageId).toBe(2_000);
    }
  });

  it("never stores two markers of one chat at once, even when a store outlasts the window", async () => {
    let inFlight = 0;
    let most = 0;
    const { stores, store } = recordingStore(60);
    const reading = createReadCoalescing({
      windowMs: 20,
      store: async (...args: [number, number, number]) => {
        most = Math.max(most, ++inFlight);
        try {
          return await store(...args);
        } finally {
          inFlight -= 1;
        }
      },
    });
    const first = reading.markRead(1, 10, 5);
    await sleep(30);
    const later = await Promise.all([reading.markRead(1, 10, 7), reading.markRead(1, 10, 6)]);
    await first;
    expect(most).toBe(1);
    expect(stores.map((s) => s.messageId)).toEqual([5, 7]);
    expect(later).toEqual([{ stored: 7 }, { stored: 7 }]);
  });

  it("fails only the callers of an id the store refuses as such, and stores the others' highest after the window", async () => {
    const unknown = new Error("message not found");
    const { stores, store } = recordingStore(1, (id) => (id === 99 ? unknown : undefined));
    const reading = createReadCoalescing({ windowMs: 50, store, refusesTheId: (e) => e === unknown });
    const first = reading.markRead(1, 10, 3);
    const [bad, good, alsoGood] = await Promise.allSettled([
      reading.markRead(1, 10, 99),
      reading.markRead(1, 10, 4),
      reading.markRead(1, 10, 5),
    ]);
    expect(await first).toEqual({ stored: 3 });
    expect(bad).toEqual({ status: "rejected", reason: unknown });
    expect(good).toEqual({ status: "fulfilled", value: { stored: 5 } });
    expect(alsoGood).toEqual({ status: "fulfilled", value: { stored: 5 } });
    expect(stores.map((s) => s.messageId)).toEqual([3, 99, 5]);
    expect(stores[2]!.at - stores[1]!.at).toBeGreaterThanOrEqual(50);
  });

  it("fails every caller of a store that failed for another reason (the chat, the database)", async () => {
    const down = new Error("storage unavailable");
    const { store } = recordingStore(1, (id) => (id > 1 ? down : undefined));
    const reading = createReadCoalescing({ windowMs: 30, store, refusesTheId: () => false });
    await reading.markRead(1, 10, 1);
    const outcomes = await Promise.allSettled([2, 3, 4].map((id) => reading.markRead(1, 10, id)));
    expect(outcomes).toEqual([2, 3, 4].map(() => ({ status: "rejected", reason: down })));
  });
});
