/**
 * `node bench/ws-clients.ts [rounds] [connects] [messages]`: what a WebSocket client costs its own process,
 * for the three a load generator could use: Node's built-in WebSocket (WHATWG, from undici), the `ws`
 * package, and bench/raw-client.ts (raw `net` sockets, what the generators use). Against a `ws` echo
 * server in a process of its own, each client runs in a fresh process and measures its own CPU time
 * (user + system): opening `connects` sockets (each waits for the server's first frame, as the generators
 * wait for `connected`; 100 at a time) and then `messages` small text frames echoed on one socket (100 in
 * flight). Each round runs every client once, the order rotated from round to round.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import WebSocket, { WebSocketServer } from "ws";
import { clientTextFrame, rawUpgrade } from "./raw-client.ts";
import { medianBy } from "./support.ts";

const clients = ["built-in WebSocket", "ws", "raw-client"] as const;
type Client = (typeof clients)[number];

const greeting = JSON.stringify({ type: "connected" });
const payload = JSON.stringify({ type: "ping", n: 12345 });
const inFlight = 100;
const parallelOpens = 100;

interface Figures {
  connectCpuUs: number;
  messageCpuUs: number;
  /** Resident memory of the client process with every socket of the connect phase open. */
  openRssMiB: number;
  connectWallMs: number;
  messageWallMs: number;
}

/** The echo server: greets each socket, echoes every message; prints its port. */
function serve() {
  const server = new WebSocketServer({ host: "127.0.0.1", port: 0, perMessageDeflate: false });
  server.on("connection", (socket) => {
    socket.send(greeting);
    socket.on("message", (data, isBinary) => socket.send(data, { binary: isBinary }));
  });
  server.on("listening", () => console.log(String((server.address() as { port: number }).port)));
}

/** An open socket of one client kind: send a text frame, close; `onText` is called for each frame after the greeting. */
interface OpenSocket {
  send(): void;
  close(): void;
}

function openBuiltIn(port: number, onText: () => void): Promise<OpenSocket> {
  return new Promise((resolve, reject) => {
    const socket = new globalThis.WebSocket(`ws://127.0.0.1:${port}/`);
    let greeted = false;
    socket.onmessage = () => {
      if (greeted) return onText();
      greeted = true;
      resolve({ send: () => socket.send(payload), close: () => socket.close() });
    };
    socket.onerror = () => reject(new Error("built-in WebSocket: connection failed"));
  });
}

function openWs(port: number, onText: () => void): Promise<OpenSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
    let greeted = false;
    socket.on("message", () => {
      if (greeted) return onText();
      greeted = true;
      resolve({ send: () => socket.send(payload), close: () => socket.close() });
    });
    socket.once("error", reject);
  });
}

const frame = clientTextFrame(payload);
async function openRaw(port: number, onText: () => void): Promise<OpenSocket> {
  const upgrade = await rawUpgrade(port, "/", 10_000, { onText });
  if (upgrade.kind !== "open") throw new Error(`raw-client: upgrade ${upgrade.kind}`);
  return { send: () => upgrade.socket.write(frame), close: () => upgrade.socket.destroy() };
}

const openers: Record<Client, (port: number, onText: () => void) => Promise<OpenSocket>> = {
  "built-in WebSocket": openBuiltIn,
  ws: openWs,
  "raw-client": openRaw,
};

const cpuUs = () => {
  const { user, system } = process.cpuUsage();
  return user + system;
};

/** Opens `count` sockets, `parallelOpens` at a time. */
async function openMany(open: (onText: () => void) => Promise<OpenSocket>, count: number): Promise<OpenSocket[]> {
  const sockets: OpenSocket[] = [];
  while (sockets.length < count) {
    const batch = Math.min(parallelOpens, count - sockets.length);
    sockets.push(...(await Promise.all(Array.from({ length: batch }, () => open(() => {})))));
  }
  return sockets;
}

/** Sends `count` frames on one socket, `inFlight` outstanding at a time; resolves when all came back. */
async function echo(open: (onText: () => void) => Promise<OpenSocket>, count: number): Promise<void> {
  let sent = 0;
  let received = 0;
  let done: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    done = resolve;
  });
  const socket = await open(() => {
    received++;
    if (received === count) done();
    else if (sent < count) {
      sent++;
      socket.send();
    }
  });
  for (; sent < Math.min(inFlight, count); sent++) socket.send();
  await finished;
  socket.close();
}

/** One client kind in this process: a small warm-up, then the measured phases; prints the figures as JSON. */
async function measureClient(client: Client, port: number, connects: number, messages: number) {
  const open = (onText: () => void) => openers[client](port, onText);
  for (const socket of await openMany(open, 100)) socket.close();
  await echo(open, 2_000);

  let cpu = cpuUs();
  let wall = performance.now();
  const sockets = await openMany(open, connects);
  const connectCpuUs = (cpuUs() - cpu) / connects;
  const connectWallMs = performance.now() - wall;
  const openRssMiB = process.memoryUsage.rss() / 1024 / 1024;
  for (const socket of sockets) socket.close();

  cpu = cpuUs();
  wall = performance.now();
  await echo(open, messages);
  const figures: Figures = {
    connectCpuUs,
    messageCpuUs: (cpuUs() - cpu) / messages,
    openRssMiB,
    connectWallMs,
    messageWallMs: performance.now() - wall,
  };
  console.log(JSON.stringify(figures));
  process.exit(0);
}

/** Runs this file with `args` in a new process; its last line of output. */
function runSelf(args: string[], onFirstLine?: (line: string) => void): Promise<string> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let last = "";
  createInterface({ input: child.stdout }).on("line", (line) => {
    if (!last) onFirstLine?.(line);
    last = line;
  });
  return new Promise((resolve, reject) =>
    child.once("close", (code) => (code === 0 ? resolve(last) : reject(new Error(`${args.join(" ")}: exit ${code}`)))),
  );
}

async function main(rounds: number, connects: number, messages: number) {
  const server = spawn(process.execPath, [fileURLToPath(import.meta.url), "serve"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const port = await new Promise<number>((resolve) =>
    createInterface({ input: server.stdout }).once("line", (line) => resolve(Number(line))),
  );
  const results = Object.fromEntries(clients.map((c) => [c, [] as Figures[]])) as Record<Client, Figures[]>;
  try {
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < clients.length; i++) {
        const client = clients[(i + round) % clients.length] as Client;
        const line = await runSelf(["client", client, String(port), String(connects), String(messages)]);
        results[client].push(JSON.parse(line) as Figures);
      }
      process.stderr.write(`round ${round + 1}/${rounds} done\n`);
    }
  } finally {
    server.kill();
  }
  console.log(
    `\nclient CPU (user+system) of its own process; ${rounds} runs each, median [min–max]; ` +
      `${connects} connects, then ${messages} echoed messages`,
  );
  const cell = (runs: Figures[], key: keyof Figures, digits: number) => {
    const sorted = runs.map((r) => r[key]).sort((a, b) => a - b);
    const median = medianBy(sorted, (x) => x) ?? 0;
    return `${median.toFixed(digits)} [${sorted[0]?.toFixed(digits)}–${sorted.at(-1)?.toFixed(digits)}]`;
  };
  for (const client of clients) {
    const runs = results[client];
    console.log(
      `  ${client.padEnd(19)} per connect ${cell(runs, "connectCpuUs", 0)} µs   per message ${cell(runs, "messageCpuUs", 1)} µs` +
        `   RSS with ${connects} open ${cell(runs, "openRssMiB", 0)} MiB   wall: connects ${cell(runs, "connectWallMs", 0)} ms,` +
        ` messages ${cell(runs, "messageWallMs", 0)} ms`,
    );
  }
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === "serve") serve();
else if (mode === "client") {
  const [client, port, connects, messages] = rest;
  if (!clients.includes(client as Client)) throw new Error(`unknown client ${client}: one of ${clients.join(", ")}`);
  await measureClient(client as Client, Number(port), Number(connects), Number(messages));
} else {
  const [rounds = "3", connects = "1000", messages = "100000"] = [mode, ...rest].filter((a) => a !== undefined);
  await main(Number(rounds), Number(connects), Number(messages));
}
