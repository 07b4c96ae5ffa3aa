/**
 * `npm start`: both services in the foreground, their output prefixed, and a copy-paste example once
 * both answer `/health`. SIGINT/SIGTERM go to both; when either exits, the other is stopped and this
 * script exits with the code of the one that exited first.
 *
 * In development (DEV_AUTH=1, NODE_ENV not production) it then seeds the demo: a few listings, people, chats
 * and a system message through the internal API (services/gateway/src/dev/seed.ts; DEMO_SEED=0 skips it).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { constants } from "node:os";
import { dirname, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { DevDefaults } from "@listings-chat/shared";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

const env = process.env;
const chatPort = env.CHAT_PORT ?? "8086";
const gatewayPort = env.GATEWAY_PORT ?? "3000";
/** Where this machine reaches a service bound to `host` (all interfaces → loopback). */
const localHost = (host: string | undefined) => (!host || host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host);
const chatUrl = `http://${localHost(env.CHAT_HOST)}:${chatPort}`;
/** The gateway's public root: under BASE_PATH when one is set (its probes answer there too). */
const gatewayUrl = `http://${localHost(env.GATEWAY_HOST)}:${gatewayPort}${env.BASE_PATH ?? ""}`;

const color = process.stdout.isTTY && !env.NO_COLOR;
const paint = (code: number, text: string) => (color ? `\u001b[${code}m${text}\u001b[0m` : text);
const say = (line: string) => console.log(`${paint(1, "[start]  ")} ${line}`);

interface Service {
  name: "chat" | "gateway";
  prefix: string;
  child: ChildProcess;
  exited: Promise<number>;
  exitCode?: number;
}

function startService(
  name: Service["name"],
  entry: string,
  prefixColor: number,
  extraEnv: Record<string, string>,
): Service {
  // This same node runs the service's TypeScript as it is (its types stripped): one process per service, so
  // signals and exit codes are the service's own.
  const child = spawn(process.execPath, [entry], {
    cwd: root, // so that PGlite's ./.data is the repo's
    env: { ...env, ...extraEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const prefix = paint(prefixColor, `[${name}]`.padEnd(9));
  const service: Service = {
    name,
    prefix,
    child,
    exited: new Promise<number>((done) => {
      // "close", not "exit": the child's last output lines are printed before this script exits.
      child.once("close", (code, signal) => {
        const exitCode = code ?? 128 + (signal ? constants.signals[signal] : 1);
        service.exitCode = exitCode;
        done(exitCode);
      });
    }),
  };
  child.once("error", (error) => {
    console.error(`${prefix} could not start: ${error.message}`);
  });
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) =>
    console.log(`${prefix} ${line}`),
  );
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) =>
    console.error(`${prefix} ${line}`),
  );
  return service;
}

say(`starting listings-chat on ${chatPort} and the gateway on ${gatewayPort} (Ctrl+C stops both)`);
const services: Service[] = [
  startService("chat", "services/listings-chat/src/main.ts", 36, {}),
  startService("gateway", "services/gateway/src/main.ts", 35, {
    DEV_AUTH: env.DEV_AUTH ?? "1",
    CHAT_UPSTREAMS: env.CHAT_UPSTREAMS ?? chatUrl,
  }),
];

let stopping = false;
let signalled = false;

/** Stops every service still running (signal `signal`), then exits with `code`, or the first failure after a signal. */
async function stopAll(signal: NodeJS.Signals, code: number): Promise<never> {
  stopping = true;
  for (const s of services) if (s.exitCode === undefined) s.child.kill(signal);
  // The services promise an exit within 10 s; past that, force it.
  const force = setTimeout(() => {
    for (const s of services) {
      if (s.exitCode !== undefined) continue;
      say(`${s.name} did not stop in time: killing it`);
      s.child.kill("SIGKILL");
    }
  }, 12_000);
  const codes = await Promise.all(services.map((s) => s.exited));
  clearTimeout(force);
  const failure = codes.find((c) => c !== 0);
  process.exit(signalled && failure !== undefined ? failure : code);
}

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (stopping) {
      // Ctrl+C reaches the children and us (and npm forwards it too): repeated signals change nothing.
      for (const s of services) if (s.exitCode === undefined) s.child.kill(signal);
      return;
    }
    signalled = true;
    say(`${signal}: stopping both services`);
    void stopAll(signal, 0);
  });
}

for (const s of services) {
  void s.exited.then((code) => {
    if (stopping) return;
    const other = services.filter((o) => o !== s && o.exitCode === undefined);
    say(`${s.name} exited with code ${code}${other.length ? `: stopping ${other.map((o) => o.name).join(", ")}` : ""}`);
    void stopAll("SIGTERM", code);
  });
}

async function answers(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1_000) });
    await res.body?.cancel().catch(() => {});
    return res.ok;
  } catch {
    return false;
  }
}

const deadline = Date.now() + 120_000;
const pending = new Set([`${chatUrl}/health`, `${gatewayUrl}/health`]);
while (pending.size > 0 && !stopping) {
  for (const url of [...pending]) if (await answers(url)) pending.delete(url);
  if (pending.size === 0 || stopping) break;
  if (Date.now() > deadline) {
    say(`no answer from ${[...pending].join(" and ")} within 120 s: stopping`);
    await stopAll("SIGTERM", 1);
  }
  await new Promise((wake) => setTimeout(wake, 250));
}

if (!stopping) {
  // Let the services' own start-up lines (written through pino's worker) land before the banner.
  await new Promise((wake) => setTimeout(wake, 300));
}
if (!stopping) {
  // A token the user chose is not printed: the examples read it from their shell instead.
  const ownToken = env.INTERNAL_TOKEN !== undefined;
  const tokenHeader = ownToken
    ? `-H "X-Internal-Token: $INTERNAL_TOKEN"`
    : `-H 'X-Internal-Token: ${DevDefaults.internalToken}'`;
  const wsUrl = `${gatewayUrl.replace(/^http/, "ws")}/ws/chat`;
  const json = "-H 'Content-Type: application/json'";
  const field = (name: string) => `node -p 'JSON.parse(require("fs").readFileSync(0)).${name}'`;
  const devToken = (user: number) =>
    `$(curl -s -X POST ${gatewayUrl}/api/dev/token ${json} -d '{"user_id":${user}}' | ${field("access_token")})`;
  const devAuth = (env.DEV_AUTH ?? "1") === "1";
  let seeded: string[] = [];
  if (devAuth && env.NODE_ENV !== "production" && env.DEMO_SEED !== "0") {
    try {
      const { seedDemo, seedSummary } = await import("../services/gateway/src/dev/seed.ts");
      await seedDemo({ chatUrl, gatewayUrl, internalToken: env.INTERNAL_TOKEN ?? DevDefaults.internalToken });
      seeded = [...seedSummary(gatewayUrl), ""];
    } catch (error) {
      seeded = [
        `  demo seed failed (the services run on): ${error instanceof Error ? error.message : String(error)}`,
        "",
      ];
    }
  }
  const lines = [
    "",
    paint(1, "listings-chat is running"),
    `  gateway       ${gatewayUrl}   the public entry: /api/v1/…, /api/v2/ws-token, /ws/chat, /api/docs`,
    `  chat service  ${chatUrl}   internal: reached through the gateway only`,
    `  stats         curl -s ${chatUrl}/internal/chat/ws/stats ${tokenHeader}; echo`,
    "",
    ...seeded,
    ...(devAuth
      ? [
          `${paint(1, "Try it")} (paste into a shell at the repo root; dev tokens stand in for the monolith's):`,
          "",
          "  # 1. access tokens for a buyer (user 1) and a seller (user 7)",
          `  BUYER=${devToken(1)}; SELLER=${devToken(7)}`,
          "  # 2. the buyer opens a chat about listing 42 (201 new, 200 the existing one: the demo seed's)",
          `  CHAT_ID=$(curl -s -X POST ${gatewayUrl}/api/v1/chats -H "Authorization: Bearer $BUYER" ${json} -d '{"listing_id":42,"seller_id":7}' | tee /dev/stderr | ${field("id")}); echo`,
          "  # 3. the seller connects: a single-use ws-token, then the WebSocket (in the background, printing frames)",
          `  WS_TOKEN=$(curl -s -X POST ${gatewayUrl}/api/v2/ws-token -H "Authorization: Bearer $SELLER" | ${field("token")})`,
          `  node -e "new (require('ws'))('${wsUrl}?token='+process.argv[1]).on('message',m=>console.log('seller got',String(m)))" "$WS_TOKEN" &`,
          "  # 4. the buyer writes: the seller's socket prints new_message",
          `  sleep 1; curl -s -X POST ${gatewayUrl}/api/v1/chats/$CHAT_ID/messages -H "Authorization: Bearer $BUYER" ${json} -d '{"content":"Hi! Is it still available?","client_msg_id":"demo-1"}'; echo`,
          "  # 5. the seller's chats (last_message, unread_count) and the polling fallback; then stop the socket",
          `  curl -s ${gatewayUrl}/api/v1/chats -H "Authorization: Bearer $SELLER"; echo`,
          `  curl -s '${gatewayUrl}/api/v1/events?after=0' -H "Authorization: Bearer $SELLER"; echo; kill %1`,
          "",
        ]
      : ["  DEV_AUTH is off: get access tokens from the monolith (see README)", ""]),
  ];
  console.log(lines.join("\n"));
}
