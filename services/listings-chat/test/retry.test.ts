import { describe, expect, it, vi } from "vitest";
import {
  defaultRetry,
  lostToAConcurrentWrite,
  type RetryOptions,
  retryingOnce,
  sqlStateOf,
  timedOut,
} from "../src/db/retry.ts";

/** A PostgreSQL error as node-postgres raises it, wrapped as drizzle wraps it. */
const sqlError = (code: string) => Object.assign(new Error("query failed"), { cause: { code } });

/** Retry options that record each wait instead of waiting. */
function recordingWaits(random = 0.5): RetryOptions & { waits: number[] } {
  const waits: number[] = [];
  return {
    ...defaultRetry,
    random: () => random,
    sleep: async (ms) => {
      waits.push(ms);
    },
    waits,
  };
}

/** Work that fails with each of `failures` in turn, then answers "stored". */
function failingWith(...failures: unknown[]) {
  return vi.fn(async () => {
    const failure = failures.shift();
    if (failure) throw failure;
    return "stored";
  });
}

describe("retryingOnce", () => {
  it.each(["40001", "40P01"])("runs the work again once after %s, after a wait within the jitter", async (code) => {
    const options = recordingWaits(0.5);
    const work = failingWith(sqlError(code));
    await expect(retryingOnce(work, options)).resolves.toBe("stored");
    expect(work).toHaveBeenCalledTimes(2);
    expect(options.waits).toEqual([options.minDelayMs + 0.5 * (options.maxDelayMs - options.minDelayMs)]);
  });

  it("draws the wait between its bounds, so that the two sides of a deadlock part", async () => {
    for (const random of [0, 0.999]) {
      const options = recordingWaits(random);
      await retryingOnce(failingWith(sqlError("40P01")), options);
      expect(options.waits[0]).toBeGreaterThanOrEqual(options.minDelayMs);
      expect(options.waits[0]).toBeLessThan(options.maxDelayMs);
    }
  });

  it("retries only once: a second conflict reaches the caller", async () => {
    const second = sqlError("40001");
    const work = failingWith(sqlError("40P01"), second);
    await expect(retryingOnce(work, recordingWaits())).rejects.toBe(second);
    expect(work).toHaveBeenCalledTimes(2);
  });

  it.each([
    ["a lock time-out", sqlError("55P03")],
    ["a statement time-out", sqlError("57014")],
    ["a lost connection", new Error("Connection terminated unexpectedly")],
    ["a server shutting down", sqlError("57P01")],
    ["a bad value", sqlError("22P02")],
  ])("does not retry %s", async (_, failure) => {
    const options = recordingWaits();
    const work = failingWith(failure);
    await expect(retryingOnce(work, options)).rejects.toBe(failure);
    expect(work).toHaveBeenCalledTimes(1);
    expect(options.waits).toEqual([]);
  });

  it("waits for real with the default options", async () => {
    const started = performance.now();
    await expect(retryingOnce(failingWith(sqlError("40001")))).resolves.toBe("stored");
    expect(performance.now() - started).toBeGreaterThanOrEqual(defaultRetry.minDelayMs - 1);
  });
});

describe("SQLSTATE classes", () => {
  it("finds the SQLSTATE on the error or on what it wraps", () => {
    expect(sqlStateOf(sqlError("40P01"))).toBe("40P01");
    expect(sqlStateOf({ code: "57014" })).toBe("57014");
    expect(sqlStateOf(Object.assign(new Error("outer"), { cause: sqlError("55P03") }))).toBe("55P03");
    // Node's own error codes are not SQLSTATEs.
    expect(sqlStateOf(Object.assign(new Error("reset"), { code: "ECONNRESET" }))).toBeUndefined();
    expect(sqlStateOf(undefined)).toBeUndefined();
  });

  it("tells conflicts from time-outs", () => {
    expect(["40001", "40P01", "55P03", "57014", "23505"].map((c) => lostToAConcurrentWrite(sqlError(c)))).toEqual([
      true,
      true,
      false,
      false,
      false,
    ]);
    expect(["40001", "40P01", "55P03", "57014", "23505"].map((c) => timedOut(sqlError(c)))).toEqual([
      false,
      false,
      true,
      true,
      false,
    ]);
  });
});
