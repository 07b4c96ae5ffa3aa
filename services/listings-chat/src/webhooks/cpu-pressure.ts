/**
 * How short of CPU this machine (or this container) is, from Linux's pressure stall information: the share of
 * the last second in which some runnable task waited for a CPU (`some total=` of `cpu.pressure`, in µs). With
 * the cores to spare it stays near 0; when every core is taken it rises (bench:chat's load on 2 cores: 55–80 %).
 *
 * The container's own cgroup (v2) is read first, then the whole machine's `/proc/pressure/cpu` (where the
 * container's is not to be seen, its neighbours' load counts too). Where neither can be read (not Linux, or a
 * kernel without PSI) the share is unknown, and nothing waits on it.
 */
import { readFileSync } from "node:fs";

/** How often the stall counter is read (a small file of the kernel's: microseconds each). */
const SAMPLE_MS = 250;
/** The share is taken over this many samples: a second, so that one busy instant does not count as pressure. */
const WINDOW_SAMPLES = 4;

export interface CpuPressure {
  /** Of the last second, the share (0…1) in which some task waited for a CPU; undefined when not known. */
  stalledShare(): number | undefined;
  /** Where it is read from (undefined when nowhere). */
  source: string | undefined;
  stop(): void;
}

/** `some total=` of a `cpu.pressure` file (µs), or undefined when the file cannot be read or has none. */
export function readStalledMicros(path: string): number | undefined {
  try {
    const match = /^some .*\btotal=(\d+)/m.exec(readFileSync(path, "utf8"));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** The cgroup (v2) of this process's `cpu.pressure`, then the machine's. */
export function defaultPressureFiles(): string[] {
  const files: string[] = [];
  try {
    const cgroup = /^0::(\/.*)$/m.exec(readFileSync("/proc/self/cgroup", "utf8"))?.[1];
    if (cgroup !== undefined) {
      const path = cgroup === "/" ? "" : cgroup;
      // cgroup v2 alone (/sys/fs/cgroup), or beside v1 (hybrid: v2 at /sys/fs/cgroup/unified).
      files.push(`/sys/fs/cgroup${path}/cpu.pressure`, `/sys/fs/cgroup/unified${path}/cpu.pressure`);
    }
  } catch {
    // Not Linux, or no cgroup v2.
  }
  files.push("/proc/pressure/cpu");
  return files;
}

/** Starts sampling the first of `files` that can be read (an unref'd timer: it keeps no process alive). */
export function watchCpuPressure(files: string[] = defaultPressureFiles(), now = () => performance.now()): CpuPressure {
  const source = files.find((file) => readStalledMicros(file) !== undefined);
  if (source === undefined) return { stalledShare: () => undefined, source, stop: () => {} };
  const samples: Array<{ at: number; stalledUs: number }> = [];
  const sample = () => {
    const stalledUs = readStalledMicros(source);
    if (stalledUs === undefined) return;
    samples.push({ at: now(), stalledUs });
    if (samples.length > WINDOW_SAMPLES + 1) samples.shift();
  };
  sample();
  const timer = setInterval(sample, SAMPLE_MS);
  timer.unref();
  return {
    source,
    stalledShare() {
      const first = samples[0];
      const last = samples[samples.length - 1];
      if (!first || !last || last.at - first.at <= 0) return undefined;
      const share = (last.stalledUs - first.stalledUs) / 1000 / (last.at - first.at);
      return Math.min(Math.max(share, 0), 1);
    },
    stop: () => clearInterval(timer),
  };
}
