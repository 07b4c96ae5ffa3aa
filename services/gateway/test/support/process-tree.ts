/**
 * A process and everything it started, read from /proc (Linux): a gateway with GATEWAY_WORKERS is a
 * supervisor and its workers, and its CPU, memory and connections are theirs together.
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";

/** The fields of /proc/<pid>/stat after the command name (whose parentheses may hold spaces). */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** The pids of the processes `pid` started, and theirs, and so on (not `pid` itself). */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const parent = Number(statFields(Number(entry))?.[1]);
    if (!Number.isFinite(parent)) continue;
    children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
  }
  const found: number[] = [];
  const visit = (of: number) => {
    for (const child of children.get(of) ?? []) {
      found.push(child);
      visit(child);
    }
  };
  visit(pid);
  return found;
}

/**
 * Whether process `pid` has exited: reaped, or a zombie (its files, listening sockets too, are closed by
 * then; an empty command line is not enough, as its memory goes before its files).
 */
export function hasExited(pid: number): boolean {
  const state = statFields(pid)?.[0];
  return state === undefined || state === "Z" || state === "X";
}

/** `pid` and its descendants. */
export const processTree = (pid: number): number[] => [pid, ...descendants(pid)];

/** The command line of a process, its arguments joined by spaces ("" once it is gone). */
export function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return "";
  }
}

/**
 * The socket inodes of the established TCP connections whose local port is `port` (IPv4 and IPv6), or
 * only the one whose remote port is `remotePort`.
 */
function establishedInodes(port: number, remotePort?: number): Set<string> {
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      const local = fields[1];
      // 01: ESTABLISHED; the inode is 0 while the connection waits in the accept queue.
      if (!local || fields[3] !== "01" || fields[9] === "0") continue;
      const portOf = (address: string) => Number.parseInt(address.slice(address.lastIndexOf(":") + 1), 16);
      if (portOf(local) !== port) continue;
      if (remotePort === undefined || portOf(fields[2] ?? "") === remotePort) inodes.add(fields[9]!);
    }
  }
  return inodes;
}

/** The socket inodes process `pid` holds open. */
function socketInodes(pid: number): string[] {
  let fds: string[] = [];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  const inodes: string[] = [];
  for (const fd of fds) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
      if (inode) inodes.push(inode);
    } catch {
      // Closed while we looked.
    }
  }
  return inodes;
}

/** How many connections to its `port` process `pid` has accepted and holds open. */
export function acceptedConnections(pid: number, port: number): number {
  const inodes = establishedInodes(port);
  return socketInodes(pid).filter((inode) => inodes.has(inode)).length;
}

/**
 * Which of `pids` accepted the connection from `clientPort` to its `port` (undefined while it waits in the
 * accept queue): with SO_REUSEPORT, the kernel picks one of the processes listening there.
 */
export function acceptedBy(pids: readonly number[], port: number, clientPort: number): number | undefined {
  const inodes = establishedInodes(port, clientPort);
  if (inodes.size === 0) return undefined;
  return pids.find((pid) => socketInodes(pid).some((inode) => inodes.has(inode)));
}
