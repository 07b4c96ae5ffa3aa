/**
 * Debian's nginx running the repository's `nginx/nginx.conf` in front of a test's gateway: the edge as deployed,
 * with only what a test run must change. In CI nginx must be installed (.ci/run installs it).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, http, pollUntil } from "./e2e.ts";

export const NGINX = "/usr/sbin/nginx";
export const hasNginx = existsSync(NGINX);
if (process.env.CI && !hasNginx) throw new Error("CI must have Debian's nginx: .ci/run installs it");

const confPath = fileURLToPath(new URL("../../../../nginx/nginx.conf", import.meta.url));

/**
 * The repository's configuration with only what a test run must change: the gateway's address, the
 * listening port, and the files nginx writes (pid, temporary bodies) in a directory of this run.
 */
export function renderConf(dir: string, listenPort: number, gatewayPort: number): string {
  const conf = readFileSync(confPath, "utf8");
  const replaced = conf
    .replace("server gateway:3000", `server 127.0.0.1:${gatewayPort}`)
    .replace("listen 8080;", `listen 127.0.0.1:${listenPort};`)
    .replace("pid /tmp/nginx.pid;", `pid ${dir}/nginx.pid;${process.getuid?.() === 0 ? "\nuser root;" : ""}`)
    .replace("http {", `http {\n  ${tempPaths(dir)}`);
  for (const [what, changed] of [
    ["gateway address", replaced.includes(`127.0.0.1:${gatewayPort}`)],
    ["listen port", replaced.includes(`127.0.0.1:${listenPort}`)],
    ["pid file", replaced.includes(`${dir}/nginx.pid`)],
  ] as const) {
    if (!changed) throw new Error(`nginx.conf changed shape: could not set the ${what} for the test`);
  }
  return replaced;
}

export interface TestNginx {
  port: number;
  /** `http://127.0.0.1:<port>` */
  base: string;
  /** What nginx wrote: its error output and the access log. */
  output(): string;
  /** The run's directory (its configuration, and the files nginx writes). */
  dir(): string;
  /** Stops nginx gracefully (SIGQUIT) and removes its directory. */
  stop(): Promise<void>;
}

/** nginx in front of the gateway on `gatewayPort`, on a free port, once it answers `/health` through it. */
export async function startNginx(gatewayPort: number): Promise<TestNginx> {
  return runNginx((dir, port) => ({ "nginx.conf": renderConf(dir, port, gatewayPort) }), "/health");
}

/**
 * Debian's nginx on a free port with the files `render` writes into a directory of this run (`nginx.conf` among
 * them; relative includes resolve there), once `readyPath` answers 200 through it.
 */
export async function runNginx(
  render: (dir: string, port: number) => Record<string, string>,
  readyPath: string,
): Promise<TestNginx> {
  const dir = mkdtempSync(join(tmpdir(), "lc-nginx-"));
  const port = await freePort();
  for (const [name, text] of Object.entries(render(dir, port))) writeFileSync(join(dir, name), text);
  // A file, not a pipe: nginx opens /dev/stdout itself, which fails on the socket Node would give it.
  const outputFd = openSync(join(dir, "output.log"), "a");
  const nginx: ChildProcess = spawn(NGINX, ["-p", dir, "-c", join(dir, "nginx.conf"), "-g", "daemon off;"], {
    stdio: ["ignore", outputFd, outputFd],
  });
  closeSync(outputFd);
  const base = `http://127.0.0.1:${port}`;
  const output = () => readFileSync(join(dir, "output.log"), "utf8");
  const stop = async () => {
    if (nginx.exitCode === null) {
      const exited = new Promise((resolve) => nginx.once("exit", resolve));
      nginx.kill("SIGQUIT");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const up = await pollUntil(
    () =>
      http(base, "GET", readyPath).then(
        (r) => r.status === 200,
        () => false,
      ),
    15_000,
    50,
  );
  if (!up) {
    const said = output();
    await stop();
    throw new Error(`nginx did not come up (exit ${nginx.exitCode}):\n${said}`);
  }
  return { port, base, output, stop, dir: () => dir };
}

/** The directory of the repository's nginx files. */
export const NGINX_DIR = fileURLToPath(new URL("../../../../nginx/", import.meta.url));

/** The temporary-file paths nginx writes, inside `dir` (a test run's own). */
export const tempPaths = (dir: string) =>
  ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `${t}_temp_path ${dir}/${t};`).join("\n  ");
