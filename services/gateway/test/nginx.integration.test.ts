/**
 * `nginx/nginx.conf` itself, run by Debian's nginx in front of a real gateway and chat instance: a chat
 * end to end through it, ops paths refused, nginx's own errors in the contract's JSON, and no token in
 * its log. In CI nginx must be installed (.ci/run installs it); elsewhere the suite is skipped without it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type E2EChat,
  type E2EGateway,
  freePort,
  http,
  pollUntil,
  randomSecret,
  startE2EChat,
  startE2EGateway,
  tryUpgrade,
} from "./support/e2e.ts";

const NGINX = "/usr/sbin/nginx";
const confPath = fileURLToPath(new URL("../../../nginx/nginx.conf", import.meta.url));
if (process.env.CI && !existsSync(NGINX)) throw new Error("CI must have Debian's nginx: .ci/run installs it");

/**
 * The repository's configuration with only what a test run must change: the gateway's address, the
 * listening port, and the files nginx writes (pid, temporary bodies) in a directory of this run.
 */
function renderConf(dir: string, listenPort: number, gatewayPort: number): string {
  const conf = readFileSync(confPath, "utf8");
  const replaced = conf
    .replace("server gateway:3000", `server 127.0.0.1:${gatewayPort}`)
    .replace("listen 8080;", `listen 127.0.0.1:${listenPort};`)
    .replace("pid /tmp/nginx.pid;", `pid ${dir}/nginx.pid;${process.getuid?.() === 0 ? "\nuser root;" : ""}`)
    .replace(
      "http {",
      `http {\n  ${["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((t) => `${t}_temp_path ${dir}/${t};`).join("\n  ")}`,
    );
  for (const [what, changed] of [
    ["gateway address", replaced.includes(`127.0.0.1:${gatewayPort}`)],
    ["listen port", replaced.includes(`127.0.0.1:${listenPort}`)],
    ["pid file", replaced.includes(`${dir}/nginx.pid`)],
  ] as const) {
    if (!changed) throw new Error(`nginx.conf changed shape: could not set the ${what} for the test`);
  }
  return replaced;
}

describe.runIf(existsSync(NGINX))("nginx/nginx.conf in front of the gateway (Debian's nginx)", () => {
  const internalToken = randomSecret();
  let chat: E2EChat;
  let gw: E2EGateway;
  let nginx: ChildProcess;
  let dir: string;
  let base: string;
  const accessLog = () => readFileSync(join(dir, "output.log"), "utf8");

  beforeAll(async () => {
    chat = await startE2EChat({ database: { inMemory: true }, internalToken });
    gw = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken });
    dir = mkdtempSync(join(tmpdir(), "lc-nginx-"));
    const port = await freePort();
    writeFileSync(join(dir, "nginx.conf"), renderConf(dir, port, gw.gateway.port));
    // A file, not a pipe: nginx opens /dev/stdout itself, which fails on the socket Node would give it.
    const output = openSync(join(dir, "output.log"), "a");
    nginx = spawn(NGINX, ["-p", dir, "-c", join(dir, "nginx.conf"), "-g", "daemon off;"], {
      stdio: ["ignore", output, output],
    });
    closeSync(output);
    base = `http://127.0.0.1:${port}`;
    const up = await pollUntil(
      () =>
        http(base, "GET", "/health").then(
          (r) => r.status === 200,
          () => false,
        ),
      15_000,
      100,
    );
    if (!up) throw new Error(`nginx did not come up (exit ${nginx.exitCode}):\n${accessLog()}`);
  }, 60_000);

  afterAll(async () => {
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((resolve) => nginx.once("exit", resolve));
      nginx.kill("SIGQUIT");
      await exited;
    }
    await gw?.stop();
    await chat?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("carries a chat end to end: REST, ws-token, the upgrade, frames both ways", async () => {
    const token = async (userId: number) =>
      (await http(base, "POST", "/api/dev/token", { body: { user_id: userId } })).body.access_token as string;
    const [alice, bob] = [await token(9001), await token(9002)];
    const created = await http(base, "POST", "/api/v1/chats", {
      headers: { authorization: `Bearer ${alice}` },
      body: { listing_id: 1, seller_id: 9002 },
    });
    expect(created.status).toBe(201);
    const open = async (access: string) => {
      const ws = await http(base, "POST", "/api/v2/ws-token", { headers: { authorization: `Bearer ${access}` } });
      const outcome = await tryUpgrade(`${base.replace("http", "ws")}/ws/chat?token=${ws.body.token}`);
      if (outcome.kind !== "open") throw new Error(`upgrade through nginx failed: ${JSON.stringify(outcome)}`);
      await outcome.socket.waitFor((f) => f.type === "connected");
      return outcome.socket;
    };
    const [aliceSocket, bobSocket] = [await open(alice), await open(bob)];
    const ref = randomUUID();
    aliceSocket.send({ type: "send_message", chat_id: created.body.id, content: "through nginx", client_msg_id: ref });
    await aliceSocket.waitFor((f) => f.type === "ack" && f.ref === ref);
    const received = await bobSocket.waitFor((f) => f.type === "new_message");
    expect(received).toMatchObject({ type: "new_message", message: { content: "through nginx" } });
    await Promise.all([aliceSocket.close(), bobSocket.close()]);
  });

  it("names every request: nginx's id replaces the client's, the gateway answers it, the access log has it", async () => {
    const res = await http(base, "GET", "/api/v1/chats", { headers: { "x-request-id": "from-the-client" } });
    const id = res.headers["x-request-id"];
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(await pollUntil(() => accessLog().includes(`req_id=${id}`), 5_000)).toBe(true);
  });

  it("refuses /metrics and every spelling of /internal, in JSON", async () => {
    for (const path of [
      "/metrics",
      "/internal",
      "/internal/chat/ws/stats",
      "/%69nternal/chat/ws/stats",
      "//internal/x",
    ]) {
      const res = await http(base, "GET", path, { headers: { "x-internal-token": internalToken } });
      expect(res.status, path).toBe(404);
      expect(res.body, path).toEqual({ error: { code: "not_found", message: expect.any(String) } });
    }
    // The same metrics answer on the gateway's own port, with the token: only nginx hides them.
    expect((await http(gw.baseUrl, "GET", "/metrics", { headers: { "x-internal-token": internalToken } })).status).toBe(
      200,
    );
  });

  it("answers its own errors in the contract's JSON", async () => {
    const big = await http(base, "POST", "/api/v1/chats", {
      headers: { authorization: "Bearer x" },
      body: "x".repeat(70 * 1024),
    });
    expect(big.status).toBe(413);
    expect(big.body).toEqual({ error: { code: "payload_too_large", message: expect.any(String) } });
  });

  it("never writes a query string (a ws-token) to its log", async () => {
    await http(base, "GET", "/ws/chat?token=secret-token-value&after=1");
    await pollUntil(() => accessLog().includes("/ws/chat"), 2_000);
    expect(accessLog()).toContain("/ws/chat");
    expect(accessLog()).not.toContain("secret-token-value");
  });
});
