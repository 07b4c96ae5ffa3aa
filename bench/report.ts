/**
 * The report of `npm run bench`: bench/results/latest.md (issue 12's targets against what the run measured,
 * then each part's table) and its latency charts, SVG drawn here: latency by percentile, as latency
 * distributions are drawn (a log scale of "nines" across, a log scale of milliseconds up).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { fanoutBench } from "./fanout.ts";
import type { PipeRound, pipeBench } from "./pipe.ts";
import type { heldSockets, upgradeCost } from "./sockets.ts";
import { PATHS, type PathName } from "./stack.ts";
import { medianBy } from "./support.ts";

export interface BenchResults {
  at: string;
  machine: { cpus: number; cpuModel?: string; memoryGiB: number; node: string };
  pipe?: Awaited<ReturnType<typeof pipeBench>>;
  upgrades?: Awaited<ReturnType<typeof upgradeCost>>;
  fanout?: Awaited<ReturnType<typeof fanoutBench>>;
  sockets?: Awaited<ReturnType<typeof heldSockets>>;
}

const COLORS: Record<PathName, string> = { direct: "#2b8a3e", gateway: "#1c7ed6", nginx: "#e8590c" };

export interface Series {
  name: PathName;
  /** [percentile in 0…1, latency in ms], ascending; the last is the maximum (percentile 1). */
  points: [number, number][];
}

/** How far along the "nines" axis a percentile is: 0 at 0 %, 1 at 90 %, 2 at 99 %, 3 at 99.9 %. */
const nines = (p: number) => -Math.log10(Math.max(1e-6, 1 - p));

const escapeXml = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;");

/** A percentile chart of the series as an SVG document, the maximum of each drawn at "max". */
export function latencyChart(title: string, series: Series[]): string {
  const [width, height, left, right, top, bottom] = [720, 380, 64, 110, 36, 48];
  const finite = series.flatMap((s) => s.points.filter(([p]) => p < 1).map(([p]) => nines(p)));
  const maxNines = Math.max(2, Math.ceil(Math.max(0, ...finite)));
  const maxX = maxNines + 0.5;
  const values = series.flatMap((s) => s.points.map(([, ms]) => ms)).filter((ms) => ms > 0);
  const lowDecade = Math.floor(Math.log10(Math.min(1, ...values)));
  const highDecade = Math.max(lowDecade + 1, Math.ceil(Math.log10(Math.max(1, ...values))));
  const x = (p: number) => left + ((p >= 1 ? maxX : nines(p)) / maxX) * (width - left - right);
  const y = (ms: number) =>
    top +
    (1 - (Math.log10(Math.max(ms, 10 ** lowDecade)) - lowDecade) / (highDecade - lowDecade)) * (height - top - bottom);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" role="img" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${left}" y="22" font-size="14" font-weight="bold">${escapeXml(title)}</text>`,
  ];
  for (let decade = lowDecade; decade <= highDecade; decade++) {
    const at = y(10 ** decade).toFixed(1);
    const label = decade < 0 ? (10 ** decade).toFixed(-decade) : String(10 ** decade);
    parts.push(`<line x1="${left}" y1="${at}" x2="${width - right}" y2="${at}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 6}" y="${at}" text-anchor="end" dominant-baseline="middle">${label} ms</text>`);
  }
  const ticks: [number, string][] = [[0, "0 %"]];
  for (let n = 1; n <= maxNines; n++)
    ticks.push([1 - 10 ** -n, `${(100 * (1 - 10 ** -n)).toFixed(Math.max(0, n - 2))} %`]);
  ticks.push([1, "max"]);
  for (const [p, label] of ticks) {
    const at = x(p).toFixed(1);
    parts.push(`<line x1="${at}" y1="${top}" x2="${at}" y2="${height - bottom}" stroke="#eee"/>`);
    parts.push(`<text x="${at}" y="${height - bottom + 16}" text-anchor="middle">${label}</text>`);
  }
  parts.push(`<text x="${(left + width - right) / 2}" y="${height - 10}" text-anchor="middle">percentile</text>`);
  for (const [i, s] of series.entries()) {
    const d = s.points.map(([p, ms], j) => `${j === 0 ? "M" : "L"}${x(p).toFixed(1)},${y(ms).toFixed(1)}`).join(" ");
    const legendY = top + 10 + i * 20;
    parts.push(`<path d="${d}" fill="none" stroke="${COLORS[s.name]}" stroke-width="2"/>`);
    parts.push(
      `<line x1="${width - right + 14}" y1="${legendY}" x2="${width - right + 38}" y2="${legendY}" stroke="${COLORS[s.name]}" stroke-width="2"/>`,
      `<text x="${width - right + 44}" y="${legendY}" dominant-baseline="middle">${s.name}</text>`,
    );
  }
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}

const n0 = (n: number) => Math.round(n).toLocaleString("en-US");
const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}×` : "n/a");
const KB_PER_KIB = 1.024;
const kb = (kib: number) => (kib * KB_PER_KIB).toFixed(1);

/** `test` of two figures, or undefined (not measured) when either is missing. */
function both(a: number | undefined, b: number | undefined, test: (a: number, b: number) => boolean) {
  return a === undefined || b === undefined ? undefined : test(a, b);
}

interface Target {
  what: string;
  measured: string;
  met: boolean | undefined;
}

/** Issue 12's targets, each against this run's figures (undefined: the part did not run). */
export function targets(r: BenchResults): Target[] {
  const out: Target[] = [];
  const pipe = r.pipe?.median;
  if (pipe) {
    const closed = (path: PathName) => pipe[`closed/${path}`]?.messagesPerSecond;
    const openP99 = (path: PathName) => pipe[`open/${path}`]?.latency.p99Ms;
    const [gatewayRate, nginxRate] = [closed("gateway"), closed("nginx")];
    out.push({
      what: "pipe: gateway throughput ≥ 1.0× nginx's, closed loop",
      measured: `${n0(gatewayRate ?? 0)} against ${n0(nginxRate ?? 0)} msg/s: ${ratio(gatewayRate ?? 0, nginxRate ?? 0)}`,
      met: both(gatewayRate, nginxRate, (g, n) => g >= n),
    });
    const [gatewayP99, nginxP99] = [openP99("gateway"), openP99("nginx")];
    out.push({
      what: `pipe: gateway p99 ≤ 1.0× nginx's at ${n0(r.pipe!.settings.openRate)} msg/s, open loop`,
      measured: `${gatewayP99} against ${nginxP99} ms: ${ratio(gatewayP99 ?? 0, nginxP99 ?? 0)}`,
      met: both(gatewayP99, nginxP99, (g, n) => g <= n),
    });
  }
  const upgrades = r.upgrades?.median;
  if (upgrades) {
    const gateway = upgrades.gateway?.cpuMsPerUpgrade.proxy;
    const nginx = upgrades.nginx?.cpuMsPerUpgrade.proxy;
    out.push({
      what: "upgrades: gateway CPU per accepted upgrade ≤ 2× nginx's per connection",
      measured: `${gateway} against ${nginx} ms (ws-token included): ${ratio(gateway ?? 0, nginx ?? 0)}`,
      met: both(gateway, nginx, (g, n) => g <= 2 * n),
    });
  }
  const sockets = r.sockets;
  if (sockets) {
    const top = sockets.levels.at(-1);
    if (top) {
      const chat = top.rssKiBPerSocket.chat * KB_PER_KIB;
      const gateway = top.rssKiBPerSocket.gateway * KB_PER_KIB;
      // A figure at or below zero says the measurement drowned in noise, not that sockets cost nothing.
      const sane = chat > 0 && gateway > 0;
      out.push({
        what: "sockets: 9,500 through one gateway, ≤ 10 KB RSS per socket in each service",
        measured: `${n0(top.sockets)} held; chat ${chat.toFixed(1)} KB, gateway ${gateway.toFixed(1)} KB per socket${sane ? "" : " (not a measurement: at or below zero)"}`,
        met: sane ? top.sockets >= 9_500 && chat <= 10 && gateway <= 10 : undefined,
      });
    }
    if (sockets.storm) {
      out.push({
        what: `reconnect storm: ${n0(sockets.storm.sockets)} sockets back within 5 s`,
        measured: `all back after ${(sockets.storm.allConnectedAfterMs / 1_000).toFixed(1)} s (${n0(sockets.storm.connected)} of ${n0(sockets.storm.sockets)})`,
        met: sockets.storm.connected === sockets.storm.sockets && sockets.storm.allConnectedAfterMs <= 5_000,
      });
    }
  }
  const fanout = r.fanout?.levels;
  if (fanout && fanout.length > 0) {
    const best = fanout.reduce((a, b) => (b.deliveriesPerSecond > a.deliveriesPerSecond ? b : a));
    out.push({
      what: "fan-out: ≥ 100,000 deliveries/s",
      measured: `${n0(best.deliveriesPerSecond)} deliveries/s with ${n0(best.socketsPerEvent)} sockets per event`,
      met: best.deliveriesPerSecond >= 100_000,
    });
  }
  return out;
}

function table(head: string[], rows: (string | number)[][]): string {
  return [
    `| ${head.join(" | ")} |`,
    `| ${head.map(() => "---").join(" | ")} |`,
    ...rows.map((row) => `| ${row.join(" | ")} |`),
  ].join("\n");
}

/** The Markdown report of a run; `charts` names the SVG files written next to it. */
export function markdownReport(r: BenchResults, charts: { open?: string; closed?: string }): string {
  const lines: string[] = [
    "# `npm run bench`: the latest run",
    "",
    `Run at ${r.at} on ${r.machine.cpus} cores (${r.machine.cpuModel ?? "unknown CPU"}), ${r.machine.memoryGiB} GiB, Node ${r.machine.node}.`,
    "Everything (load generator, listings-chat, gateway, nginx, PostgreSQL, Redis) shares this machine, so the",
    "figures that count are the ratios between paths measured in the same run. Written by `bench/run.ts`;",
    "the raw figures are in `latest.json`.",
    "",
    "## Targets (issue 12)",
    "",
    table(
      ["target", "this run", "met"],
      targets(r).map((t) => [t.what, t.measured, t.met === undefined ? "not measured" : t.met ? "yes" : "**no**"]),
    ),
  ];
  if (r.pipe) {
    const { settings, median, rounds } = r.pipe;
    const nginxClosed = median["closed/nginx"]?.messagesPerSecond ?? 0;
    const nginxOpenP99 = median["open/nginx"]?.latency.p99Ms ?? 0;
    const row = (path: PathName) => {
      const closed = median[`closed/${path}`];
      const open = median[`open/${path}`];
      if (!closed || !open) return [path, "", "", "", "", "", ""];
      const cpu = (x: PipeRound) => `${x.cpuUsPerMessage.proxy ?? "–"}, ${x.cpuUsPerMessage.chat}`;
      return [
        path,
        `${n0(closed.messagesPerSecond)} (${ratio(closed.messagesPerSecond, nginxClosed)})`,
        `${closed.latency.p50Ms} / ${closed.latency.p99Ms} / ${closed.latency.maxMs}`,
        cpu(closed),
        `${open.latency.p50Ms} / ${open.latency.p99Ms} (${ratio(open.latency.p99Ms, nginxOpenP99)}) / ${open.latency.maxMs}`,
        cpu(open),
      ];
    };
    lines.push(
      "",
      "## 1. The pipe",
      "",
      `Ping → pong through listings-chat over ${settings.clients} sockets: directly, through the gateway, through nginx`,
      `(one worker). Closed loop (each socket's next ping when its pong is in) and open loop (${n0(settings.openRate)}`,
      "pings a second on a fixed schedule, latency counted from when each was due). Median of",
      `${settings.rounds} interleaved rounds of ${settings.seconds} s; ratios against nginx.`,
      "",
      table(
        [
          "path",
          "closed loop msg/s",
          "closed p50 / p99 / max ms",
          "closed CPU µs/msg: proxy, chat",
          "open p50 / p99 / max ms",
          "open CPU µs/msg: proxy, chat",
        ],
        PATHS.map(row),
      ),
      "",
      `Every round: ${rounds.map((x) => `${x.mode} ${x.path} ${n0(x.messagesPerSecond)} msg/s p99 ${x.latency.p99Ms} ms`).join("; ")}.`,
    );
    const bare = r.pipe.bare ?? [];
    if (bare.length > 0) {
      const medianOf = (proxy: string) =>
        medianBy(
          bare.filter((b) => b.proxy === proxy),
          (b) => b.cpuUsPerMessage,
        );
      const node = medianOf("node relay");
      const nginx = medianOf("nginx");
      if (node && nginx) {
        lines.push(
          "",
          "The floor under these figures (`bench/bare-relay.ts`): the gateway's relay alone in a process of its own, and nginx",
          "alone, each between 50 upgraded sockets and a bare echo server, 32-byte messages in a closed loop (no frames, no",
          `instance): the relay ${n0(node.messagesPerSecond)} msg/s at ${node.cpuUsPerMessage} µs of its CPU per message, nginx`,
          `${n0(nginx.messagesPerSecond)} msg/s at ${nginx.cpuUsPerMessage} µs (${ratio(node.cpuUsPerMessage, nginx.cpuUsPerMessage)} nginx's CPU per message; median of ${bare.length / 2} rounds).`,
        );
      }
    }
    const profiled = Object.entries(r.pipe.profiles ?? {});
    if (profiled.length > 0) {
      lines.push(
        "",
        "Where each proxy's CPU went in one more closed-loop run under Linux `perf` (share of samples; the kernel's",
        "part is the reads, the writes and the receiving side of each write on loopback, which any proxy pays):",
        "",
        ...profiled.map(([path, shares]) => {
          const parts = Object.entries(shares!.percent)
            .sort((a, b) => b[1] - a[1])
            .filter(([, percent]) => percent >= 0.5)
            .map(([where, percent]) => `${where} ${percent.toFixed(1)} %`);
          const cpu = shares!.cpuUsPerMessage;
          const kernel = shares!.percent["[kernel.kallsyms]"];
          const split =
            cpu !== undefined && kernel !== undefined
              ? ` (of ${cpu} µs per message, ${((cpu * kernel) / 100).toFixed(1)} in the kernel, ${((cpu * (100 - kernel)) / 100).toFixed(1)} in the process)`
              : "";
          return `- ${path}: ${parts.join(", ")}${split}.`;
        }),
      );
    }
    if (charts.open) lines.push("", `![open-loop latency by percentile](${charts.open})`);
    if (charts.closed) lines.push("", `![closed-loop latency by percentile](${charts.closed})`);
  }
  if (r.upgrades) {
    const { settings, median, wsToken } = r.upgrades;
    lines.push(
      "",
      "## 2. Upgrades and sockets",
      "",
      `${n0(settings.sockets)} sockets by each path at ${settings.perSecond} a second, each a user of its own, median of`,
      `${settings.rounds} interleaved rounds. Through the gateway each connect fetches its ws-token first, as a browser does;`,
      `alone, a ws-token costs the gateway ${wsToken.gatewayCpuMsPerToken} ms of CPU (p50 ${wsToken.p50Ms} ms, one at a time).`,
      "",
      table(
        ["path", "accepted", "connect p50 / p99 ms", "CPU ms per upgrade: proxy", "chat"],
        PATHS.map((path) => {
          const m = median[path];
          return m
            ? [
                path,
                n0(m.accepted),
                `${m.connectP50Ms} / ${m.connectP99Ms}${m.wsTokenP99Ms === undefined ? "" : ` (ws-token ${m.wsTokenP50Ms} / ${m.wsTokenP99Ms})`}`,
                m.cpuMsPerUpgrade.proxy ?? "–",
                m.cpuMsPerUpgrade.chat,
              ]
            : [path, "", "", "", ""];
        }),
      ),
    );
  }
  if (r.sockets) {
    const { levels, storm, settings } = r.sockets;
    lines.push(
      "",
      `Sockets held through one gateway, opened at ${settings.openPerSecond} a second, on processes of their own (warmed up by 200`,
      "sockets opened and closed). Memory is read after a full garbage collection in each service (through its",
      "inspector): resident memory (the least over the 2 s after it) and the JS heap (used and external), per socket",
      "held against the processes before the first, and the resident memory per socket added since the level before:",
      "",
      table(
        [
          "sockets held",
          "RSS per socket: chat, gateway",
          "JS heap per socket: chat, gateway",
          "RSS per added socket",
          "all in after",
          "refusals",
        ],
        levels.map((level) => [
          n0(level.sockets),
          `${kb(level.rssKiBPerSocket.chat)}, ${kb(level.rssKiBPerSocket.gateway)} KB`,
          level.heapKiBPerSocket ? `${kb(level.heapKiBPerSocket.chat)}, ${kb(level.heapKiBPerSocket.gateway)} KB` : "",
          level.rssKiBPerAddedSocket
            ? `${kb(level.rssKiBPerAddedSocket.chat)}, ${kb(level.rssKiBPerAddedSocket.gateway)} KB`
            : "",
          `${(level.open.allConnectedAfterMs / 1_000).toFixed(1)} s`,
          JSON.stringify(level.open.refusedByStatus),
        ]),
      ),
    );
    if (storm) {
      lines.push(
        "",
        `Reconnect storm: every socket dropped at once, then ${n0(storm.sockets)} clients back over ${(storm.spreadMs / 1_000).toFixed(1)} s (the browser`,
        `client's jitter after a 1001), each with a ws-token and an upgrade and retrying after a refusal's Retry-After: ${n0(storm.connected)}`,
        `in after ${(storm.allConnectedAfterMs / 1_000).toFixed(1)} s, ${n0(storm.acceptedAtFirstAttempt)} at the first attempt, connect p50 / p99`,
        `${storm.connectP50Ms} / ${storm.connectP99Ms} ms, refusals ${JSON.stringify(storm.refusedByStatus)}; CPU per accepted socket:`,
        `chat ${storm.cpuMsPerAcceptedSocket.chat} ms, gateway ${storm.cpuMsPerAcceptedSocket.gateway} ms` +
          (storm.cpuMsPerAcceptedSocket.postgres === undefined
            ? "."
            : `, and on the same cores the load generator ${storm.cpuMsPerAcceptedSocket.loadGenerator} ms, PostgreSQL ${storm.cpuMsPerAcceptedSocket.postgres} ms, Redis ${storm.cpuMsPerAcceptedSocket.redis} ms; the machine was ${Math.round((storm.machineBusyShare ?? 0) * 100)} % busy.`),
      );
    }
  }
  if (r.fanout) {
    const { levels, settings } = r.fanout;
    lines.push(
      "",
      "## 3. Fan-out",
      "",
      `${settings.senders} buyers send to one seller in a closed loop; each message goes to the seller's sockets and the`,
      `buyer's own. ${settings.seconds} s per level.`,
      "",
      table(
        [
          "sockets per event",
          "messages/s",
          "deliveries/s",
          "chat CPU µs per delivery",
          "load generator µs per delivery",
        ],
        levels.map((l) => [
          n0(l.socketsPerEvent),
          n0(l.messagesPerSecond),
          n0(l.deliveriesPerSecond),
          l.chatCpuUsPerDelivery,
          l.loadGeneratorCpuUsPerDelivery,
        ]),
      ),
    );
  }
  return `${lines.join("\n")}\n`;
}

/** Writes latest.md and its charts into `dir`. */
export function writeReport(r: BenchResults, dir: string): void {
  const charts: { open?: string; closed?: string } = {};
  if (r.pipe) {
    for (const mode of ["open", "closed"] as const) {
      const series: Series[] = PATHS.flatMap((name) => {
        const round = r.pipe!.median[`${mode}/${name}`];
        return round ? [{ name, points: round.curve }] : [];
      });
      const title =
        mode === "open"
          ? `Round-trip latency at ${n0(r.pipe.settings.openRate)} pings/s (open loop)`
          : `Round-trip latency, ${r.pipe.settings.clients} sockets in a closed loop`;
      const file = `latency-${mode}.svg`;
      writeFileSync(join(dir, file), latencyChart(title, series));
      charts[mode] = file;
    }
  }
  writeFileSync(join(dir, "latest.md"), markdownReport(r, charts));
}
