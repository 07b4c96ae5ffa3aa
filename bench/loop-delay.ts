/**
 * A preload for a service process a benchmark starts (`node --import <this file>`, passed to the service in
 * NODE_OPTIONS by bench/photos.ts): the event loop's delay, read by the bench per window of its own.
 *
 * The service's /metrics has prom-client's `nodejs_eventloop_lag_p99_seconds` (reset at each scrape), but it
 * samples every 10 ms and its values include those 10 ms (an idle loop reads 10 ms, not 0): too coarse for a
 * 20 ms target. Here `monitorEventLoopDelay` samples every BENCH_LOOP_DELAY_RESOLUTION_MS (1 ms), so that a
 * value is the loop's delay plus at most about 1 ms.
 *
 * With BENCH_LOOP_DELAY_FILE set (and only in the main thread), each SIGUSR2 writes that file (whole, by a
 * rename) with the histogram since the signal before (or since start): count, p50/p90/p99/p99.9/max in ms,
 * the event loop's utilization over the window, the window's per-second p99 and max (to see when a stall
 * happened), its garbage collections (count, total and longest pause of each kind, from `gc` performance
 * entries) and the heap as the window ends, then starts the next window. Nothing else in the process changes.
 */
import { renameSync, writeFileSync } from "node:fs";
import { constants, monitorEventLoopDelay, PerformanceObserver, performance } from "node:perf_hooks";
import { getHeapStatistics } from "node:v8";
import { isMainThread } from "node:worker_threads";

const file = process.env.BENCH_LOOP_DELAY_FILE;
if (file && isMainThread) {
  // Not passed on to any process this one starts (NODE_OPTIONS is, but without the file the preload does nothing).
  delete process.env.BENCH_LOOP_DELAY_FILE;
  const resolution = Number(process.env.BENCH_LOOP_DELAY_RESOLUTION_MS ?? 1);
  const ms = (ns: number) => Number((ns / 1e6).toFixed(2));
  const window = monitorEventLoopDelay({ resolution });
  const second = monitorEventLoopDelay({ resolution });
  window.enable();
  second.enable();
  let sequence = 0;
  let startedAt = performance.now();
  let utilizationAtStart = performance.eventLoopUtilization();
  /** [seconds since the window started, p99 ms, max ms] of each second of the window. */
  let seconds: [number, number, number][] = [];
  /** The window's collections by kind: count, total and longest pause in ms. */
  let collections = new Map<string, { count: number; totalMs: number; maxMs: number }>();
  const kinds: Record<number, string> = {
    [constants.NODE_PERFORMANCE_GC_MINOR]: "minor",
    [constants.NODE_PERFORMANCE_GC_MAJOR]: "major",
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weakcb",
  };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = kinds[(entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? -1] ?? "other";
      const seen = collections.get(kind) ?? { count: 0, totalMs: 0, maxMs: 0 };
      seen.count += 1;
      seen.totalMs += entry.duration;
      seen.maxMs = Math.max(seen.maxMs, entry.duration);
      collections.set(kind, seen);
    }
  }).observe({ entryTypes: ["gc"] });
  setInterval(() => {
    if (second.count > 0) {
      seconds.push([
        Number(((performance.now() - startedAt) / 1000).toFixed(1)),
        ms(second.percentile(99)),
        ms(second.max),
      ]);
    }
    second.reset();
  }, 1_000).unref();
  process.on("SIGUSR2", () => {
    sequence += 1;
    const report = {
      sequence,
      pid: process.pid,
      resolutionMs: resolution,
      seconds: Number(((performance.now() - startedAt) / 1000).toFixed(2)),
      count: window.count,
      p50Ms: ms(window.percentile(50)),
      p90Ms: ms(window.percentile(90)),
      p99Ms: ms(window.percentile(99)),
      p999Ms: ms(window.percentile(99.9)),
      maxMs: ms(window.max),
      /** Of the window's time, the share the loop spent running JavaScript and callbacks (not waiting for I/O). */
      utilization: Number(performance.eventLoopUtilization(utilizationAtStart).utilization.toFixed(3)),
      perSecond: seconds,
      gc: Object.fromEntries(
        [...collections].map(([kind, c]) => [
          kind,
          { count: c.count, totalMs: Math.round(c.totalMs), maxMs: Number(c.maxMs.toFixed(1)) },
        ]),
      ),
      heapMiB: {
        used: Math.round(getHeapStatistics().used_heap_size / 2 ** 20),
        total: Math.round(getHeapStatistics().total_heap_size / 2 ** 20),
        external: Math.round(getHeapStatistics().external_memory / 2 ** 20),
        arrayBuffers: Math.round(process.memoryUsage().arrayBuffers / 2 ** 20),
      },
    };
    writeFileSync(`${file}.tmp`, `${JSON.stringify(report)}\n`);
    renameSync(`${file}.tmp`, file);
    window.reset();
    second.reset();
    seconds = [];
    collections = new Map();
    startedAt = performance.now();
    utilizationAtStart = performance.eventLoopUtilization();
  });
}
