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

  it("refuses at once when the expected wait (the queue ahead, and how long slots are held) is too long", async () => {
    let clock = 0;
    const admission = new UpgradeAdmission({ inFlightMax: 2, queueMax: 100, maxWaitMs: 100, now: () => clock });
    // Slots held 40 ms each: with two slots, every two waiting add 40 ms to the wait of the next.
    const first = admitted(await admission.acquire(never()));
    const second = admitted(await admission.acquire(never()));
    clock += 40;
    first();
    second();
    expect(admission.expectedWaitMs).toBe(20);
    admitted(await admission.acquire(never()));
    admitted(await admission.acquire(never()));
    // The fifth in the queue expects 5 × 40 / 2 = 100 ms: still worth it; the sixth's 120 ms is not.
    for (let i = 0; i < 5; i++) void admission.acquire(never());
    expect(admission.waiting).toBe(5);
    expect(admission.expectedWaitMs).toBe(120);
    expect(await admission.acquire(never())).toEqual({ kind: "full" });
    expect(admission.waiting).toBe(5);
  });
});
