/**
 * Chat instances found through DNS (`dns+http://<name>:<port>`, a Kubernetes headless Service): each
 * address an instance of its own, looked up again while the gateway runs; a failed lookup keeps the last
 * instances, a name that is gone empties them. With a lookup of the test's own, then through a real
 * gateway whose instance is found by looking up `localhost`.
 */
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { loadGatewayConfig } from "../src/env.ts";
import {
  type AddressLookup,
  parseUpstreamSource,
  startUpstreamDiscovery,
  type UpstreamSource,
} from "../src/proxy/upstream-discovery.ts";
import { createUpstreams } from "../src/proxy/upstreams.ts";
import { http, randomSecret, startE2EChat, startE2EGateway } from "./support/e2e.ts";

const log = pino({ level: "silent" });
const dnsError = (code: string) => Object.assign(new Error(code), { code });

describe("CHAT_UPSTREAMS entries", () => {
  it("are fixed base URLs or dns+http(s)://<name>:<port>, and nothing else", () => {
    expect(parseUpstreamSource("http://10.0.0.5:8086/")).toEqual({ kind: "fixed", base: "http://10.0.0.5:8086" });
    expect(parseUpstreamSource("dns+http://listings-chat-headless.chat.svc.cluster.local:8086")).toEqual({
      kind: "dns",
      protocol: "http:",
      name: "listings-chat-headless.chat.svc.cluster.local",
      port: 8086,
    });
    expect(parseUpstreamSource("dns+https://chat:8443/")).toMatchObject({ kind: "dns", protocol: "https:" });
    for (const wrong of [
      "dns+http://chat",
      "dns+http://chat:8086/path",
      "dns+tcp://chat:1",
      "ftp://x",
      "http://x?a=1",
    ]) {
      expect(parseUpstreamSource(wrong), wrong).toBeUndefined();
    }
    expect(loadGatewayConfig({ CHAT_UPSTREAMS: "dns+http://chat:8086, http://10.0.0.9:8086/" }).chatUpstreams).toEqual([
      "dns+http://chat:8086",
      "http://10.0.0.9:8086",
    ]);
    expect(() => loadGatewayConfig({ CHAT_UPSTREAMS: "dns+http://chat" })).toThrow(
      'invalid CHAT_UPSTREAMS: "dns+http://chat" is neither an http:// or https:// base URL nor dns+http://<name>:<port>',
    );
  });
});

describe("upstream discovery", () => {
  let stop: (() => void) | undefined;
  afterEach(() => stop?.());

  it("gives every address its own instance, follows changes, keeps the last ones through a failed lookup", async () => {
    let answer: Awaited<ReturnType<AddressLookup>> | Error = [
      { address: "10.0.0.6", family: 4 },
      { address: "10.0.0.5", family: 4 },
      { address: "fd00::7", family: 6 },
    ];
    const lookups: string[] = [];
    const lookup: AddressLookup = async (name) => {
      lookups.push(name);
      if (answer instanceof Error) throw answer;
      return answer;
    };
    const changes: string[][] = [];
    const sources = [
      parseUpstreamSource("http://10.0.0.1:8086"),
      parseUpstreamSource("dns+http://chat-headless:8086"),
    ] as UpstreamSource[];
    const discovery = await startUpstreamDiscovery({
      sources,
      refreshMs: 60_000,
      onChange: (bases) => changes.push(bases),
      log,
      lookup,
    });
    stop = discovery.stop;
    expect(discovery.current()).toEqual([
      "http://10.0.0.1:8086",
      "http://10.0.0.5:8086",
      "http://10.0.0.6:8086",
      "http://[fd00::7]:8086",
    ]);
    expect(lookups).toEqual(["chat-headless"]);

    answer = [{ address: "10.0.0.6", family: 4 }]; // two pods gone
    await discovery.refresh();
    expect(discovery.current()).toEqual(["http://10.0.0.1:8086", "http://10.0.0.6:8086"]);

    answer = dnsError("EAI_AGAIN"); // the resolver is down for a moment: nothing is dropped
    await discovery.refresh();
    expect(discovery.current()).toEqual(["http://10.0.0.1:8086", "http://10.0.0.6:8086"]);
    await discovery.refresh();
    expect(changes).toHaveLength(2); // unchanged lists are not announced

    answer = dnsError("ENOTFOUND"); // no ready pod behind the headless Service
    await discovery.refresh();
    expect(discovery.current()).toEqual(["http://10.0.0.1:8086"]);
  });

  it("looks names up again every refreshMs", async () => {
    let calls = 0;
    const discovery = await startUpstreamDiscovery({
      sources: [parseUpstreamSource("dns+http://chat:8086") as UpstreamSource],
      refreshMs: 100,
      onChange: () => {},
      log,
      lookup: async () => {
        calls += 1;
        return [{ address: `10.0.0.${calls}`, family: 4 }];
      },
    });
    stop = discovery.stop;
    await new Promise((r) => setTimeout(r, 350));
    expect(calls).toBeGreaterThanOrEqual(3);
    expect(discovery.current()).toEqual([`http://10.0.0.${calls}:8086`]);
  });

  it("replaces instances in place: a kept one keeps its state, a gone one's waiting upgrades go on", async () => {
    const upstreams = createUpstreams({
      urls: ["http://10.0.0.1:8086", "http://10.0.0.2:8086"],
      connectTimeoutMs: 100,
      requestTimeoutMs: 100,
      upgradeAdmission: { inFlightMax: 1, queueMax: 10, maxWaitMs: 60_000 },
    });
    const [kept, gone] = upstreams.all;
    const holding = await gone!.upgrades.acquire(new AbortController().signal);
    expect(holding.kind).toBe("admitted");
    const waiting = gone!.upgrades.acquire(new AbortController().signal);
    upstreams.markDown(kept!);
    upstreams.replace(["http://10.0.0.1:8086", "http://10.0.0.3:8086"]);
    expect(upstreams.all.map((u) => u.base)).toEqual(["http://10.0.0.1:8086", "http://10.0.0.3:8086"]);
    expect(upstreams.all[0]).toBe(kept);
    expect(upstreams.all[0]!.downUntil).toBeGreaterThan(0);
    expect((await waiting).kind).toBe("withdrawn");
    upstreams.replace([]);
    expect(upstreams.order()).toEqual([]);
    await upstreams.close();
  });
});

describe("a gateway whose instance is found through DNS", () => {
  it("looks up localhost and serves a socket and REST through what it found", async () => {
    const internalToken = randomSecret();
    const chat = await startE2EChat({ database: { inMemory: true }, internalToken });
    const gw = await startE2EGateway({ chatUpstreams: [`dns+http://localhost:${chat.port}`], internalToken });
    try {
      const ready = await http(gw.baseUrl, "GET", "/ready");
      expect(ready.status, ready.text).toBe(200);
      expect(ready.body.upstreams.reachable).toBe(1); // 127.0.0.1 (and ::1, where localhost has it, is not listening)
      const socket = await gw.connectAs(4_101);
      socket.send({ type: "ping" });
      await socket.waitFor((f) => f.type === "pong");
      socket.close();
      const chats = await gw.api(await gw.devToken(4_101), "GET", "/api/v1/chats");
      expect(chats.status, chats.text).toBe(200);
    } finally {
      await gw.stop();
      await chat.stop();
    }
  });
});
