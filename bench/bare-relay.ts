/**
 * The floor of a Node pipe: the gateway's relay (`proxy/relay.ts`) alone in a process of its own, against
 * nginx (one worker), each between 50 loopback sockets and a bare echo server, in a closed loop of 32-byte
 * messages; interleaved rounds. Each socket is upgraded first (an HTTP upgrade the relay passes through as
 * bytes and nginx proxies), then both tunnel raw bytes. No frames, no chat instance: what a message costs
 * the proxy itself when the proxy is all there is (two reads and two writes per round trip).
 */
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { startNginx } from "./nginx.ts";
import { cpuSeconds, root, trackChild, typeScriptLoader } from "./support.ts";

export interface BareRound {
  proxy: "node relay" | "nginx";
  messagesPerSecond: number;
  cpuUsPerMessage: number;
}

async function closedLoop(port: number, seconds: number, cpu: () => number): Promise<{ rate: number; cpuUs: number }> {
  const message = Buffer.alloc(32, 0x61);
  let count = 0;
  let running = true;
  const sockets = await Promise.all(
    Array.from(
      { length: 50 },
      () =>
        new Promise<Socket>((resolve, reject) => {
          // An upgrade first (nginx proxies HTTP; after a 101 it tunnels bytes as the gateway's pipe does).
          const socket = connect({ port, host: "127.0.0.1", noDelay: true }, () =>
            socket.write("GET / HTTP/1.1\r\nHost: bench\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
          );
          const timer = setTimeout(() => {
            socket.destroy();
            reject(new Error("no answer to the upgrade within 10 s"));
          }, 10_000);
          socket.on("error", (error) => {
            clearTimeout(timer);
            reject(error);
          });
          socket.once("data", () => {
            clearTimeout(timer);
            resolve(socket);
            socket.on("data", () => {
              count += 1;
              if (running) socket.write(message);
            });
          });
        }),
    ),
  );
  for (const socket of sockets) socket.write(message);
  await new Promise((r) => setTimeout(r, 500));
  const before = { count, cpu: cpu(), at: performance.now() };
  await new Promise((r) => setTimeout(r, seconds * 1_000));
  const done = {
    count: count - before.count,
    cpu: cpu() - before.cpu,
    seconds: (performance.now() - before.at) / 1_000,
  };
  running = false;
  for (const socket of sockets) socket.destroy();
  return { rate: Math.round(done.count / done.seconds), cpuUs: Number(((done.cpu * 1e6) / done.count).toFixed(2)) };
}

export async function bareRelayBench(rounds: number, seconds: number): Promise<BareRound[]> {
  const echo = createServer();
  echo.on("upgrade", (_request, socket: Socket) => {
    socket.setNoDelay(true);
    socket.on("error", () => socket.destroy());
    socket.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    socket.on("data", (chunk) => socket.write(chunk));
  });
  await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
  const echoPort = (echo.address() as { port: number }).port;
  const child = trackChild(
    spawn(process.execPath, [...typeScriptLoader, join(root, "bench/relay-child.ts"), String(echoPort)], {
      cwd: root,
      stdio: ["ignore", "pipe", "inherit"],
    }),
  );
  const relayPort = Number(
    await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("the relay process did not start within 30 s")), 30_000);
      child.once("exit", (code) => reject(new Error(`the relay process exited (${code}) before it listened`)));
      child.stdout!.once("data", (data) => {
        clearTimeout(timer);
        resolve(String(data));
      });
    }),
  );
  const nginx = await startNginx(echoPort);
  console.error(`bench: bare relay started: relay ${child.pid}, nginx ${nginx.pid}, worker ${nginx.workerPid}`);
  const out: BareRound[] = [];
  try {
    for (let round = 0; round < rounds; round++) {
      const order = round % 2 === 0 ? (["node relay", "nginx"] as const) : (["nginx", "node relay"] as const);
      for (const proxy of order) {
        const { rate, cpuUs } =
          proxy === "nginx"
            ? await closedLoop(nginx.port, seconds, () => nginx.cpuSeconds())
            : await closedLoop(relayPort, seconds, () => cpuSeconds(child.pid!));
        out.push({ proxy, messagesPerSecond: rate, cpuUsPerMessage: cpuUs });
        console.error(`bare ${proxy}: ${rate} msg/s, ${cpuUs} µs of its CPU per message`);
      }
    }
  } finally {
    child.kill("SIGKILL");
    await nginx.stop();
    echo.close();
  }
  return out;
}
