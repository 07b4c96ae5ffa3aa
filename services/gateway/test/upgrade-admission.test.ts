import { describe, expect, it } from "vitest";
import { type Admission, UpgradeAdmission } from "../src/proxy/upgrade-admission.ts";

const never = () => new AbortController().signal;

function admitted(admission: Admission): () => void {
  if (admission.kind !== "admitted") throw new Error(`expected a slot, got ${admission.kind}`);
  return admission.release;
}

describe("UpgradeAdmission", () => {
  it("gives slots up to the limit, then queues in order, then refuses at once when the queue is full", async () => {
    const admission = new UpgradeAdmission({ inFlightMax: 2, queueMax: 2, maxWaitMs: 60_000 });
    const first = admitted(await admission.acquire(never()));
    admitted(await admission.acquire(never()));
    const order: string[] = [];
    const third = admission.acquire(never()).then((a) => {
      order.push("third");
      return a;
    });
    const fourth = admission.acquire(never()).then((a) => {
      order.push("fourth");
      return a;
    });
    expect(admission.waiting).toBe(2);
    expect(await admission.acquire(never())).toEqual({ kind: "full" });

    first();
    first(); // a second release gives back nothing more
    const thirdRelease = admitted(await third);
    expect(admission.inFlight).toBe(2);
    expect(admission.waiting).toBe(1);
    thirdRelease();
    admitted(await fourth);
    expect(order).toEqual(["third", "fourth"]);
    expect(admission.inFlight).toBe(2);
    expect(admission.waiting).toBe(0);
  });

  it("lets a waiter leave (the client went away): it is withdrawn, skipped, and no slot is lost", async () => {
    const admission = new UpgradeAdmission({ inFlightMax: 1, queueMax: 5, maxWaitMs: 60_000 });
    const release = admitted(await admission.acquire(never()));
    const leaving = new AbortController();
    const left = admission.acquire(leaving.signal);
    const staying = admission.acquire(never());
    leaving.abort();
    expect(await left).toEqual({ kind: "withdrawn" });
    expect(admission.waiting).toBe(1);
    release();
    const next = admitted(await staying);
    expect(admission.inFlight).toBe(1);
    next();
    expect(admission.inFlight).toBe(0);
    // An aborted signal gets no slot even when one is free.
    const gone = new AbortController();
    gone.abort();
    expect(await admission.acquire(gone.signal)).toEqual({ kind: "withdrawn" });
    expect(admission.inFlight).toBe(0);
  });

  it("withdraws every waiter when the instance is found dead, and serves new ones afterwards", async () => {
    const admission = new UpgradeAdmission({ inFlightMax: 1, queueMax: 5, maxWaitMs: 60_000 });
    const release = admitted(await admission.acquire(never()));
    const waiters = [admission.acquire(never()), admission.acquire(never())];
    admission.withdrawAll();
    expect(await Promise.all(waiters)).toEqual([{ kind: "withdrawn" }, { kind: "withdrawn" }]);
    expect(admission.waiting).toBe(0);
    const later = admission.acquire(never());
    release();
    admitted(await later);
    expect(admission.inFlight).toBe(1);
  });

  it("with no queue, refuses whatever finds every slot taken", async () => {
    const admission = new UpgradeAdmission({ inFlightMax: 1, queueMax: 0, maxWaitMs: 60_000 });
    admitted(await admission.acquire(never()));
    expect(await admission.acquire(never())).toEqual({ kind: "full" });
  });

  it("refuses at once when the expected wait (the queue ahead, at the rate slots come free) is too long", async () => {
    let clock = 0;
    const admission = new UpgradeAdmission({ inFlightMax: 2, queueMax: 100, maxWaitMs: 100, now: () => clock });
    const slots = [admitted(await admission.acquire(never())), admitted(await admission.acquire(never()))];
    // Nothing measured yet: waiters are queued however many (the first of a storm are never refused on a guess).
    const waiters = [1, 2, 3].map(() => admission.acquire(never()));
    expect(admission.expectedWaitMs).toBe(0);
    // Slots come free every 20 ms while upgrades wait: the queue moves one every 20 ms.
    clock += 20;
    slots[0]?.();
    clock += 20;
    slots[1]?.();
    const third = admitted(await waiters[0]!);
    admitted(await waiters[1]!);
    expect(admission.waiting).toBe(1);
    expect(admission.expectedWaitMs).toBe(40);
    // Four more fit within 100 ms (the fifth in line expects 5 × 20); the next would wait 120 ms: refused.
    for (let i = 0; i < 3; i++) void admission.acquire(never());
    expect(admission.waiting).toBe(4);
    void admission.acquire(never());
    expect(admission.expectedWaitMs).toBe(120);
    expect(await admission.acquire(never())).toEqual({ kind: "full" });
    expect(admission.waiting).toBe(5);
    third();
  });

  it("forgets an old, slow measure once its queue is empty: the first in line is always let in", async () => {
    let clock = 0;
    const admission = new UpgradeAdmission({ inFlightMax: 1, queueMax: 100, maxWaitMs: 100, now: () => clock });
    let slot = admitted(await admission.acquire(never()));
    const waiters = [admission.acquire(never()), admission.acquire(never())];
    // Slots came free 5 s apart (one very slow greeting) while upgrades waited.
    clock += 5_000;
    slot();
    slot = admitted(await waiters[0]!);
    clock += 5_000;
    slot();
    slot = admitted(await waiters[1]!);
    expect(admission.waiting).toBe(0);
    // The queue emptied: the next waiter is queued, not refused on the 5 s of the last storm.
    const next = admission.acquire(never());
    expect(admission.waiting).toBe(1);
    slot();
    admitted(await next);
  });
});
