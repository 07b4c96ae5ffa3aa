/**
 * When the webhook sender steps aside for sends (src/webhooks/yielding.ts) and how short of CPU the machine is
 * (src/webhooks/cpu-pressure.ts): the policy with a clock and pressure of the test's own, the reader with
 * pressure files written here, and the machine's own file where Linux has one.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { defaultPressureFiles, readStalledMicros, watchCpuPressure } from "../src/webhooks/cpu-pressure.ts";
import { createYieldPolicy, SERVING_WINDOW_MS, YIELD_PRESSURE } from "../src/webhooks/yielding.ts";

describe("the yield policy", () => {
  const clock = { now: 0 };
  /** Users' traffic: moves at every look unless `quiet`. */
  const traffic = { count: 0, quiet: false };
  const policy = (maxS: number, share: { value: number | undefined }) =>
    createYieldPolicy({
      pressure: { stalledShare: () => share.value },
      activity: () => (traffic.quiet ? traffic.count : ++traffic.count),
      maxS,
      now: () => clock.now,
    });

  it("yields only while the pressure is at the threshold or above", () => {
    const share = { value: 0 as number | undefined };
    const p = policy(30, share);
    expect(p.shouldYield()).toBe(false);
    share.value = YIELD_PRESSURE - 0.01;
    expect(p.shouldYield()).toBe(false);
    share.value = YIELD_PRESSURE;
    expect(p.shouldYield()).toBe(true);
    expect(p.isYielding()).toBe(true);
    share.value = undefined; // Unknown: nothing waits on it.
    expect(p.shouldYield()).toBe(false);
    expect(p.isYielding()).toBe(false);
  });

  it("yields only while users are served: a backlog alone does not stand aside for its own load", () => {
    clock.now = 5_000_000;
    const p = policy(30, { value: 1 });
    expect(p.shouldYield()).toBe(true);
    traffic.quiet = true;
    clock.now += SERVING_WINDOW_MS;
    expect(p.shouldYield()).toBe(true); // The last traffic is a second old: still counts.
    clock.now += 1;
    expect(p.shouldYield()).toBe(false);
    clock.now += 10_000;
    expect(p.shouldYield()).toBe(false);
    traffic.quiet = false; // They are back.
    expect(p.shouldYield()).toBe(true);
  });

  it("never yields with WEBHOOK_YIELD_MAX_S=0", () => {
    expect(policy(0, { value: 1 }).shouldYield()).toBe(false);
  });

  it("stops yielding after maxS, until the queue runs dry, even if the pressure flickers", () => {
    clock.now = 1_000_000;
    const share = { value: 1 };
    const p = policy(30, share);
    expect(p.shouldYield()).toBe(true);
    // A dip below the threshold does not start the wait again: the queue has not run dry.
    clock.now += 20_000;
    share.value = 0;
    expect(p.shouldYield()).toBe(false);
    share.value = 1;
    clock.now += 9_000;
    expect(p.shouldYield()).toBe(true);
    clock.now += 1_000; // 30 s since the wait began.
    expect(p.shouldYield()).toBe(false);
    clock.now += 60_000;
    expect(p.shouldYield()).toBe(false);
    // Dry: a new wait may begin.
    p.drained();
    expect(p.shouldYield()).toBe(true);
    clock.now += 29_999;
    expect(p.shouldYield()).toBe(true);
  });
});

describe("CPU pressure", () => {
  const dir = mkdtempSync(join(tmpdir(), "lc-psi-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, totalUs: number) => {
    const path = join(dir, name);
    writeFileSync(
      path,
      `some avg10=1.00 avg60=2.00 avg300=3.00 total=${totalUs}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n`,
    );
    return path;
  };

  it("reads `some total=` and nothing from a missing or foreign file", () => {
    expect(readStalledMicros(file("a", 123_456))).toBe(123_456);
    expect(readStalledMicros(join(dir, "missing"))).toBeUndefined();
    writeFileSync(join(dir, "foreign"), "cpu 1 2 3\n");
    expect(readStalledMicros(join(dir, "foreign"))).toBeUndefined();
  });

  it("is the stalled share of the time between samples, from the first readable file", async () => {
    const path = file("b", 1_000_000);
    const clock = { now: 0 };
    const pressure = watchCpuPressure([join(dir, "missing"), path], () => clock.now);
    try {
      expect(pressure.source).toBe(path);
      expect(pressure.stalledShare()).toBeUndefined(); // One sample: no interval yet.
      // 300 ms stalled in the next 500 ms: 60 %.
      file("b", 1_300_000);
      clock.now = 500;
      await new Promise((resolve) => setTimeout(resolve, 400)); // The sampler's 250 ms tick.
      expect(pressure.stalledShare()).toBeCloseTo(0.6, 5);
    } finally {
      pressure.stop();
    }
  });

  it("is unknown where no file can be read", () => {
    const pressure = watchCpuPressure([join(dir, "missing")]);
    expect(pressure.source).toBeUndefined();
    expect(pressure.stalledShare()).toBeUndefined();
  });

  it.runIf(process.platform === "linux" && existsSync("/proc/pressure/cpu"))(
    "finds this machine's pressure, between 0 and 1",
    async () => {
      const files = defaultPressureFiles();
      expect(files.at(-1)).toBe("/proc/pressure/cpu");
      const pressure = watchCpuPressure(files);
      try {
        expect(pressure.source).toBeDefined();
        await new Promise((resolve) => setTimeout(resolve, 600));
        const share = pressure.stalledShare();
        expect(share).toBeGreaterThanOrEqual(0);
        expect(share).toBeLessThanOrEqual(1);
      } finally {
        pressure.stop();
      }
    },
  );
});
