/**
 * Where a process spends its CPU, by Linux `perf` (BENCH_PERF=1): the kernel's share against the process's
 * own code. For a proxy on loopback the kernel's part (reads, writes, the receiving side of each write,
 * wake-ups) is the floor any proxy pays; the rest is what the proxy itself adds. Sampled while `work` runs.
 */
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface ProfileShares {
  samples: number;
  /** Percent of the samples in each place: the kernel, and the shared objects of the process (node, libc, JIT…). */
  percent: Record<string, number>;
}

/** Runs `work` with `perf record` on `pid`; the shares, or undefined when perf is missing or not allowed. */
export async function withPerfProfile<T>(
  pid: number,
  work: () => Promise<T>,
): Promise<{ result: T; shares?: ProfileShares }> {
  const dir = mkdtempSync(join(tmpdir(), "lc-bench-perf-"));
  const file = join(dir, "perf.data");
  const recorder = spawn("perf", ["record", "-F", "999", "-p", String(pid), "-o", file], { stdio: "ignore" });
  const started = await new Promise<boolean>((resolve) => {
    recorder.once("error", () => resolve(false));
    setTimeout(() => resolve(recorder.exitCode === null), 300);
  });
  try {
    const result = await work();
    if (!started) return { result };
    if (recorder.exitCode === null && recorder.signalCode === null) {
      const stopped = new Promise((resolve) => recorder.once("exit", resolve));
      recorder.kill("SIGINT");
      await stopped;
    }
    const report = await new Promise<string>((resolve) =>
      execFile("perf", ["report", "-i", file, "--no-children", "--sort", "dso", "--stdio"], (error, stdout) =>
        resolve(error ? "" : stdout),
      ),
    );
    const percent: Record<string, number> = {};
    for (const match of report.matchAll(/^\s+([\d.]+)%\s+(.+?)\s*$/gm)) {
      const name = match[2]!.startsWith("[JIT]") ? "[JIT]" : match[2]!;
      percent[name] = Number(((percent[name] ?? 0) + Number(match[1])).toFixed(2));
    }
    const count = /Samples: ([\d.]+)(K?) of event/.exec(report);
    const samples = count ? Math.round(Number(count[1]) * (count[2] ? 1_000 : 1)) : 0;
    return { result, shares: Object.keys(percent).length > 0 ? { samples, percent } : undefined };
  } finally {
    if (recorder.exitCode === null) recorder.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}
