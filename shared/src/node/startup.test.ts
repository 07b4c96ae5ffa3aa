import { afterEach, describe, expect, it } from "vitest";
import { createStartup, StartupStopped } from "./startup.ts";

/** A step that finishes only when told to. */
function pending<T>() {
  let finish!: (value: T) => void;
  const promise = new Promise<T>((resolve) => {
    finish = resolve;
  });
  return { promise, finish };
}

describe("createStartup", () => {
  it("runs every step and closes nothing when no stop comes", async () => {
    const stop = new AbortController();
    const startup = createStartup(stop.signal);
    const closed: string[] = [];
    expect(await startup.step("a", Promise.resolve(1), () => closed.push("a"))).toBe(1);
    startup.opened(() => closed.push("lazy"));
    await startup.beforeListen();
    startup.done();
    stop.abort();
    expect(closed).toEqual([]);
  });

  it("a stop during a step that hangs rejects at once, closes what was opened newest first, and later what the step yields", async () => {
    const stop = new AbortController();
    const startup = createStartup(stop.signal);
    const closed: string[] = [];
    await startup.step("database", Promise.resolve("db"), (db) => closed.push(db));
    startup.opened(() => closed.push("redis client"));
    const bus = pending<string>();
    const waiting = startup.step("redis", bus.promise, (opened) => closed.push(opened));
    stop.abort();
    await expect(waiting).rejects.toEqual(new StartupStopped("redis"));
    expect(closed).toEqual(["redis client", "db"]);
    // The hung step finishes after all: what it opened is closed, not leaked.
    bus.finish("bus");
    await new Promise((resolve) => setImmediate(resolve));
    expect(closed).toEqual(["redis client", "db", "bus"]);
  });

  it("a stop that came between steps stops the next one before it waits", async () => {
    const stop = new AbortController();
    const startup = createStartup(stop.signal);
    const closed: string[] = [];
    await startup.step("database", Promise.resolve("db"), (db) => closed.push(db));
    stop.abort();
    const never = pending<void>();
    await expect(startup.step("hub", never.promise)).rejects.toBeInstanceOf(StartupStopped);
    await expect(startup.beforeListen()).rejects.toEqual(new StartupStopped("listen"));
    expect(closed).toEqual(["db"]);
  });

  it("a step that fails by itself passes its error on and closes nothing", async () => {
    const startup = createStartup(new AbortController().signal);
    await expect(startup.step("database", Promise.reject(new Error("refused")))).rejects.toThrow("refused");
  });

  describe("beforeListen and a signal the kernel delivered but Node has not handled", () => {
    const handlers: Array<() => void> = [];
    afterEach(() => {
      for (const handler of handlers.splice(0)) process.off("SIGUSR2", handler);
    });

    it("sees the signal: the port is not opened after it", async () => {
      const stop = new AbortController();
      const handler = () => stop.abort();
      handlers.push(handler);
      process.on("SIGUSR2", handler);
      const startup = createStartup(stop.signal);
      process.kill(process.pid, "SIGUSR2");
      // Delivered, not yet handled: start-up that ran on resolved promises alone would still see no stop.
      await Promise.resolve();
      expect(stop.signal.aborted).toBe(false);
      await expect(startup.beforeListen()).rejects.toEqual(new StartupStopped("listen"));
    });
  });
});
