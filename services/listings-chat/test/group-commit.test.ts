import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createGroupCommit, type StoreBatch } from "../src/messages/group-commit.ts";
import type { SendOutcome, SendRequest } from "../src/messages/repository.ts";

const send = (n: number): SendRequest => ({ senderId: n, chatId: 1, content: `m${n}`, clientMsgId: null });

/** An outcome that names the send it answers, so a mix-up between sends shows. */
const answer = (s: SendRequest): SendOutcome => ({
  status: "created",
  message: {
    id: s.senderId,
    chat_id: s.chatId,
    sender_id: s.senderId,
    kind: "text",
    content: s.content,
    data: null,
    attachments: [],
    client_msg_id: null,
    created_at: new Date(0).toISOString(),
    edited_at: null,
    deleted_at: null,
    deleted_by: null,
  },
  events: [],
  becameMutual: false,
});

/** A store that records each batch it is given and answers once `release` is called. */
function recordingStore() {
  const batches: SendRequest[][] = [];
  const releases: Array<() => void> = [];
  const store = vi.fn<StoreBatch>(
    (sends) =>
      new Promise((resolve) => {
        batches.push([...sends]);
        releases.push(() => resolve(sends.map(answer)));
      }),
  );
  const releaseAll = () => {
    for (const release of releases.splice(0)) release();
  };
  return { store, batches, releaseAll };
}

/** A PostgreSQL error as node-postgres raises it, wrapped as drizzle wraps it. */
const sqlError = (code: string) => Object.assign(new Error("query failed"), { cause: { code } });

describe("group commit", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("with no wait, stores together what arrived in one turn of the event loop, and each in its own order", async () => {
    const { store, batches, releaseAll } = recordingStore();
    const commit = createGroupCommit(store, { maxWaitMs: 0, maxBatch: 64 });
    const first = [1, 2, 3].map((n) => commit.submit(send(n)));
    await vi.advanceTimersToNextTimerAsync();
    const second = [4, 5].map((n) => commit.submit(send(n)));
    await vi.advanceTimersToNextTimerAsync();
    expect(batches.map((b) => b.map((s) => s.senderId))).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    releaseAll();
    const outcomes = await Promise.all([...first, ...second]);
    expect(outcomes.map((o) => (o.status === "created" ? o.message.id : 0))).toEqual([1, 2, 3, 4, 5]);
  });

  it("answers no send before its batch is stored", async () => {
    const { store, releaseAll } = recordingStore();
    const commit = createGroupCommit(store, { maxWaitMs: 0, maxBatch: 64 });
    let answered = false;
    const pending = commit.submit(send(1)).then(() => {
      answered = true;
    });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(store).toHaveBeenCalledTimes(1);
    expect(answered).toBe(false);
    releaseAll();
    await pending;
    expect(answered).toBe(true);
  });

  it("waits up to maxWaitMs for company, and not longer", async () => {
    const { store, batches, releaseAll } = recordingStore();
    const commit = createGroupCommit(store, { maxWaitMs: 2, maxBatch: 64 });
    const all = [commit.submit(send(1))];
    await vi.advanceTimersByTimeAsync(1);
    all.push(commit.submit(send(2)));
    expect(store).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(batches).toEqual([[send(1), send(2)]]);
    all.push(commit.submit(send(3)));
    await vi.advanceTimersByTimeAsync(2);
    expect(batches).toHaveLength(2);
    releaseAll();
    await Promise.all(all);
  });

  it("stores a full batch at once, and with maxBatch 1 each send alone", async () => {
    const full = recordingStore();
    const commit = createGroupCommit(full.store, { maxWaitMs: 50, maxBatch: 3 });
    const all = [1, 2, 3, 4].map((n) => commit.submit(send(n)));
    expect(full.batches.map((b) => b.length)).toEqual([3]);
    await vi.advanceTimersByTimeAsync(50);
    expect(full.batches.map((b) => b.length)).toEqual([3, 1]);
    full.releaseAll();
    await Promise.all(all);

    const alone = recordingStore();
    const single = createGroupCommit(alone.store, { maxWaitMs: 0, maxBatch: 1 });
    const each = [1, 2].map((n) => single.submit(send(n)));
    expect(alone.batches).toEqual([[send(1)], [send(2)]]);
    alone.releaseAll();
    await Promise.all(each);
  });

  it("when PostgreSQL refuses a batch, stores its sends one by one: only the bad one fails", async () => {
    const store = vi.fn<StoreBatch>(async (sends) => {
      if (sends.some((s) => s.content === "bad")) throw sqlError("22P05");
      return sends.map(answer);
    });
    const commit = createGroupCommit(store, { maxWaitMs: 0, maxBatch: 64 });
    const outcomes = Promise.allSettled([
      commit.submit(send(1)),
      commit.submit({ ...send(2), content: "bad" }),
      commit.submit(send(3)),
    ]);
    await vi.runAllTimersAsync();
    const [one, two, three] = await outcomes;
    expect(one).toMatchObject({ status: "fulfilled", value: { message: { id: 1 } } });
    expect(two).toMatchObject({ status: "rejected", reason: { cause: { code: "22P05" } } });
    expect(three).toMatchObject({ status: "fulfilled", value: { message: { id: 3 } } });
    // The batch once, then each of its three alone.
    expect(store.mock.calls.map(([sends]) => sends.length)).toEqual([3, 1, 1, 1]);
  });

  it("when the batch times out (a lock or statement time-out, a server out of resources), fails its sends without splitting it", async () => {
    for (const code of ["55P03", "57014", "53300"]) {
      const store = vi.fn<StoreBatch>(async () => {
        throw sqlError(code);
      });
      const commit = createGroupCommit(store, { maxWaitMs: 0, maxBatch: 64 });
      const outcomes = Promise.allSettled([1, 2, 3, 4].map((n) => commit.submit(send(n))));
      await vi.runAllTimersAsync();
      expect((await outcomes).map((o) => o.status)).toEqual(["rejected", "rejected", "rejected", "rejected"]);
      // Once, whole: not four more calls queueing for the same lock.
      expect(store.mock.calls.map(([sends]) => sends.length)).toEqual([4]);
    }
  });

  it("when the connection is lost (the commit may have happened), fails the batch without storing it again", async () => {
    for (const lost of [new Error("Connection terminated unexpectedly"), sqlError("57P01"), sqlError("08006")]) {
      const store = vi.fn<StoreBatch>(async () => {
        throw lost;
      });
      const commit = createGroupCommit(store, { maxWaitMs: 0, maxBatch: 64 });
      const outcomes = Promise.allSettled([commit.submit(send(1)), commit.submit(send(2))]);
      await vi.runAllTimersAsync();
      expect((await outcomes).map((o) => o.status)).toEqual(["rejected", "rejected"]);
      expect(store).toHaveBeenCalledTimes(1);
    }
  });
});
