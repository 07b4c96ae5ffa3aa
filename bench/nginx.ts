/**
 * Debian's nginx as the benchmarks' baseline: one worker proxying WebSockets to an upstream on loopback,
 * the way the edge (nginx/nginx.conf) passes upgrades, with a configuration of its own in a temporary
 * directory. Installed from Debian's package when it is missing and this process may (root).
 */
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cpuSeconds, freePort, rssKiB, trackChild } from "./support.ts";

const NGINX = "/usr/sbin/nginx";

/** The path of nginx, installing Debian's package first when it is missing; throws what to do when it cannot. */
export function ensureNginx(): string {
  if (existsSync(NGINX)) return NGINX;
  if (process.getuid?.() !== 0) {
    throw new Error(`${NGINX} is missing: install Debian's nginx (apt-get install nginx) and run the bench again`);
  }
  console.error("bench: installing Debian's nginx (apt-get install nginx)");
  execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit" });
  execFileSync("apt-get", ["install", "-y", "-qq", "nginx"], {
    stdio: "inherit",
    env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
  });
  return NGINX;
}

export interface Nginx {
  port: number;
  /** The master's. */
  pid: number;
  /** The worker's: the process that proxies. */
  workerPid: number;
  /** CPU seconds its worker has spent so far. */
  cpuSeconds(): number;
  /** Its worker's resident memory, in KiB. */
  rssKiB(): number;
  stop(): Promise<void>;
}

/** Starts nginx with one worker on a free loopback port, proxying everything (upgrades included) to `upstreamPort`. */
export async function startNginx(upstreamPort: number): Promise<Nginx> {
  const nginx = ensureNginx();
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "lc-bench-nginx-"));
  writeFileSync(
    join(dir, "nginx.conf"),
    `worker_processes 1;
worker_rlimit_nofile 20000;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / {
      proxy_pass http://127.0.0.1:${upstreamPort};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 1h;
    }
  }
}
`,
  );
  const master = trackChild(
    spawn(nginx, ["-p", dir, "-c", join(dir, "nginx.conf"), "-g", "daemon off;"], { stdio: "inherit" }),
    // Its workers go with a fast shutdown; a killed master would leave them behind.
    "SIGTERM",
  );
  let workers: number[] = [];
  for (let i = 0; i < 50 && workers.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    try {
      workers = execFileSync("pgrep", ["-P", String(master.pid)])
        .toString()
        .trim()
        .split("\n")
        .map(Number);
    } catch {
      // No worker yet.
    }
  }
  if (workers.length === 0) {
    master.kill("SIGKILL");
    throw new Error(`nginx did not start (see ${dir}/error.log)`);
  }
  return {
    port,
    pid: master.pid ?? 0,
    workerPid: workers[0]!,
    cpuSeconds: () => workers.reduce((sum, pid) => sum + cpuSeconds(pid), 0),
    rssKiB: () => workers.reduce((sum, pid) => sum + rssKiB(pid), 0),
    async stop() {
      const gone = master.exitCode !== null || master.signalCode !== null;
      const exited = gone ? Promise.resolve() : new Promise((resolve) => master.once("exit", resolve));
      // Fast shutdown: a graceful one would wait for every proxied WebSocket to close.
      master.kill("SIGTERM");
      const kill = setTimeout(() => master.kill("SIGKILL"), 3_000);
      await exited;
      clearTimeout(kill);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
