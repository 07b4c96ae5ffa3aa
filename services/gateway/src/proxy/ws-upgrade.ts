import type { IncomingMessage, OutgoingHttpHeaders } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { ErrorCode } from "@listings-chat/shared";
import {
  currentRequestId,
  injectTraceContext,
  REQUEST_ID_HEADER,
  redactUrl,
  refuseUpgrade,
  upgradeScope,
} from "@listings-chat/shared/node";
import type { Logger } from "pino";
import { AuthError } from "../auth/errors.ts";
import type { WsTokenGrant, WsTokens } from "../auth/ws-token.ts";
import { GatewayErrorCode, MISCONFIGURED_MESSAGE } from "../error-codes.ts";
import { handshakeProblem } from "./handshake.ts";
import { destroyOnError, relay } from "./relay.ts";
import type { SocketCaps } from "./socket-caps.ts";
import { requestUpstreamUpgrade, type UpgradeAnswer, UpgradeTimeoutError } from "./upstream-upgrade.ts";
import type { Upstream, Upstreams } from "./upstreams.ts";

export const WS_PATH = "/ws/chat";

/** Handshake headers of the client that the instance needs to answer the same handshake. */
const FORWARDED_HANDSHAKE_HEADERS = [
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-protocol",
  "sec-websocket-extensions",
  "origin",
  "user-agent",
];

/** The instance's answer to a ws-token it has already seen (another gateway opened a socket with it). */
const TOKEN_USED_MESSAGE = "the ws-token was already used: fetch a new one from /api/v2/ws-token";

/** How long the client of a pipe whose instance has closed may take to read what is left. */
const CLIENT_FLUSH_MS = 5_000;

export interface WsUpgradeOptions {
  /** BASE_PATH: upgrades come to `<basePath>/ws/chat` (http/base-path.ts); "" or absent: `/ws/chat`. */
  basePath?: string;
  wsTokens: WsTokens;
  upstreams: Upstreams;
  internalToken: string;
  /** Sent to instances on every upgrade, so that a drain can ask them to close this gateway's sockets. */
  gatewayId: string;
  /** Per-user cap of open pipes (in memory, or shared through Redis). */
  caps: SocketCaps;
  maxSocketsPerUser: number;
  connectTimeoutMs: number;
  isDraining: () => boolean;
  /** Told how long each accepted upgrade took, from its request to its pipe. */
  observeUpgrade?: (seconds: number) => void;
  log: Logger;
  /** Draws the Retry-After of a full queue; Math.random unless a test pins it. */
  random?: () => number;
}

export interface WsCounters {
  accepted: number;
  /** Upgrades refused by the gateway, by HTTP status. */
  refused: Record<number, number>;
  /** Attempts an instance failed: its non-101 status ("503", "401"…), "busy", "timeout" or "unreachable". */
  upstreamFailures: Record<string, number>;
  /** Upgrades refused by the gateway itself because the queue for an instance's slots was full. */
  queueFull: number;
}

interface Pipe {
  client: Duplex;
  upstream: Socket;
  instance: Upstream;
}

/**
 * The gateway's `upgrade` listener, as ordered passes: path → handshake → draining → ws-token checked →
 * cursor → per-user cap → ws-token used up → instance → pipe. Every refusal is a plain HTTP answer written
 * before any 101, after which the socket is closed for sure and the cap slot given back; a refusal the
 * client can retry (429, 503) leaves its ws-token usable. An accepted upgrade becomes a raw two-way byte
 * pipe with no frame parsing.
 *
 * The hop to the instance is plain `http.request`: node-http-proxy pipes an instance's non-101 answer
 * straight to the client and ends the client's socket on any failure, so it could neither fail over on a
 * 503 nor answer a misconfigured instance's 401 in the gateway's own words.
 */
export function createWsUpgrade(options: WsUpgradeOptions) {
  const { wsTokens, upstreams, log, caps, random = Math.random, basePath = "" } = options;
  const pipes = new Set<Pipe>();
  /** Upgrades between their first await and their pipe (or refusal): a drain waits for them too. */
  let handshakesInProgress = 0;
  const counters: WsCounters = { accepted: 0, refused: {}, upstreamFailures: {}, queueFull: 0 };

  function refuse(socket: Duplex, status: number, code: string, message: string, headers?: Record<string, string>) {
    counters.refused[status] = (counters.refused[status] ?? 0) + 1;
    refuseUpgrade(socket, status, code, message, headers);
  }

  function onClientSocketError(error: Error) {
    log.debug({ err: error }, "client socket error");
  }

  function countFailure(outcome: string) {
    counters.upstreamFailures[outcome] = (counters.upstreamFailures[outcome] ?? 0) + 1;
  }

  function refuseDraining(socket: Duplex) {
    refuse(socket, 503, ErrorCode.shuttingDown, "this gateway is shutting down: connect again", { "Retry-After": "1" });
  }

  /** Nothing was opened with the token: the client may retry with it. */
  async function giveTokenBack(grant: WsTokenGrant) {
    await wsTokens.giveBack(grant).catch((error) => log.warn({ err: error }, "could not give a ws-token back"));
  }

  function failed(upstream: Upstream, outcome: string, error?: unknown) {
    countFailure(outcome);
    upstreams.markDown(upstream);
    if (outcome === "401") {
      log.error(
        { upstream: upstream.base },
        "chat instance refused the internal token on an upgrade: INTERNAL_TOKEN differs between gateway and chat",
      );
    } else log.warn({ err: error, upstream: upstream.base, outcome }, "chat instance failed an upgrade");
  }

  /**
   * Tries the instances in turn; the first 101 wins. Each hop waits for a slot at its instance first
   * (upgrade-admission.ts): a full queue there counts as busy. An instance's 4xx other than 401 is its
   * verdict on the handshake itself (409: the ws-token was already used) and ends the search; 401 (another
   * INTERNAL_TOKEN), 5xx and failures try the next one. A 503 with Retry-After is an instance that is alive
   * but busy: the next one is tried, and it is not put to the back of the queue for everyone (only no answer,
   * or another failure, does that).
   * The slot of a 101 goes with it: it is given back once the instance greets the socket.
   */
  async function upgradeAtSomeInstance(
    path: string,
    headers: OutgoingHttpHeaders,
    signal: AbortSignal,
  ): Promise<
    | { instance: Upstream; answer: Extract<UpgradeAnswer, { kind: "upgraded" }>; releaseSlot: () => void }
    | { refusedWith: number }
    | { misconfigured: boolean; busyRetryAfter?: string }
  > {
    let misconfigured = false;
    let busyRetryAfter: string | undefined;
    for (const instance of upstreams.order()) {
      if (options.isDraining()) return { misconfigured, busyRetryAfter };
      const admission = await instance.upgrades.acquire(signal);
      if (signal.aborted || options.isDraining()) {
        if (admission.kind === "admitted") admission.release();
        return { misconfigured, busyRetryAfter };
      }
      if (admission.kind === "withdrawn") continue;
      if (admission.kind === "full") {
        counters.queueFull += 1;
        // Spread over 1–3 s, as an instance's own busy answer is, so that the refused do not return together.
        busyRetryAfter ??= String(1 + Math.floor(random() * 3));
        continue;
      }
      let answer: UpgradeAnswer;
      try {
        answer = await requestUpstreamUpgrade({
          base: instance.base,
          path,
          headers,
          timeoutMs: options.connectTimeoutMs,
          signal,
        });
      } catch (error) {
        // Marked down before its slot is given back, so that no waiter is sent on to a dead instance.
        if (!signal.aborted) failed(instance, error instanceof UpgradeTimeoutError ? "timeout" : "unreachable", error);
        admission.release();
        if (signal.aborted) return { misconfigured, busyRetryAfter };
        continue;
      }
      if (answer.kind === "upgraded") {
        upstreams.markUp(instance);
        return { instance, answer, releaseSlot: admission.release };
      }
      if (answer.status >= 400 && answer.status < 500 && answer.status !== 401) {
        admission.release();
        // The instance refused this handshake itself (a bad subprotocol, say): another would refuse it too.
        countFailure(String(answer.status));
        return { refusedWith: answer.status };
      }
      if (answer.status === 503 && answer.retryAfter !== undefined) {
        admission.release();
        countFailure("busy");
        // Passed on to the client: a number of seconds, or our own when the instance said something else.
        busyRetryAfter ??= /^\d{1,4}$/.test(answer.retryAfter) ? answer.retryAfter : "2";
        continue;
      }
      if (answer.status === 401) misconfigured = true;
      failed(instance, String(answer.status));
      admission.release();
    }
    return { misconfigured, busyRetryAfter };
  }

  /**
   * Writes the instance's 101 to the client and joins the two sockets until either closes. `greeted` runs
   * once, at the instance's first bytes (its `connected` frame) or when either side closes first.
   */
  function pipe(
    client: Duplex,
    clientHead: Buffer,
    instance: Upstream,
    answer: UpgradeAnswer & { kind: "upgraded" },
    greeted: () => void,
  ) {
    const { response, socket: upstream, head } = answer;
    const lines = ["HTTP/1.1 101 Switching Protocols"];
    for (let i = 0; i < response.rawHeaders.length; i += 2)
      lines.push(`${response.rawHeaders[i]}: ${response.rawHeaders[i + 1]}`);
    client.write(`${lines.join("\r\n")}\r\n\r\n`);
    if (head.length > 0) client.write(head);
    if (clientHead.length > 0) upstream.write(clientHead);
    (client as Socket).setNoDelay?.(true);
    upstream.setNoDelay(true);
    counters.accepted += 1;
    const entry: Pipe = { client, upstream, instance };
    pipes.add(entry);
    upstream.on("error", destroyOnError);
    client.on("error", destroyOnError);
    if (head.length > 0) greeted();
    else upstream.once("data", greeted);
    // The instance closed (its close frame may still be on the way out): let the client read it, briefly.
    upstream.once("close", () => {
      greeted();
      if (client.destroyed) return;
      client.end();
      const timer = setTimeout(() => client.destroy(), CLIENT_FLUSH_MS);
      timer.unref();
      client.once("close", () => clearTimeout(timer));
    });
    client.once("close", () => {
      pipes.delete(entry);
      upstream.destroy();
      greeted();
    });
    relay(client, upstream);
  }

  async function handle(req: IncomingMessage, socket: Duplex, head: Buffer, started: number) {
    const url = new URL(req.url ?? "/", "http://gateway.invalid");
    if (url.pathname !== `${basePath}${WS_PATH}`)
      return refuse(socket, 404, ErrorCode.notFound, `no WebSocket endpoint here: use ${basePath}${WS_PATH}`);
    const problem = handshakeProblem(req);
    if (problem) return refuse(socket, problem.status, problem.code, problem.message, problem.headers);
    if (options.isDraining()) return refuseDraining(socket);
    const token = url.searchParams.get("token");
    if (!token) return refuse(socket, 401, ErrorCode.unauthorized, "missing ws-token: get one from /api/v2/ws-token");
    const after = url.searchParams.get("after");
    if (after !== null && !/^\d{1,16}$/.test(after)) {
      return refuse(socket, 400, ErrorCode.validationFailed, "after must be a non-negative integer event id");
    }
    let grant: WsTokenGrant;
    try {
      grant = wsTokens.verify(token);
    } catch (error) {
      if (error instanceof AuthError) return refuse(socket, 401, error.code, error.message);
      throw error;
    }
    let release: (() => void) | undefined;
    try {
      release = await caps.tryAcquire(grant.userId);
    } catch (error) {
      log.error({ err: error }, "could not check the per-user socket cap");
      return refuse(socket, 503, "cap_store_unavailable", "could not count open connections: retry shortly", {
        "Retry-After": "2",
      });
    }
    if (!release) {
      return refuse(
        socket,
        429,
        ErrorCode.rateLimited,
        `too many open connections for this user (${options.maxSocketsPerUser})`,
      );
    }
    const giveSlotBack = release;
    // From here every way out that opens no pipe gives the slot back at once.
    let piped = false;
    try {
      if (socket.destroyed) return;
      try {
        await wsTokens.use(grant);
      } catch (error) {
        if (error instanceof AuthError) return refuse(socket, 401, error.code, error.message);
        log.error({ err: error }, "could not check a ws-token");
        return refuse(socket, 503, "token_store_unavailable", "could not check the ws-token: retry shortly", {
          "Retry-After": "2",
        });
      }
      if (socket.destroyed) return;

      // The internal hop: the cursor goes on, the token does not; identity comes from the gateway alone.
      const headers: OutgoingHttpHeaders = {
        connection: "Upgrade",
        upgrade: "websocket",
        "x-user-id": String(grant.userId),
        "x-internal-token": options.internalToken,
        "x-gateway-id": options.gatewayId,
        // The instance refuses a second upgrade with the same token (409): without Redis, each gateway's replay
        // store knows only its own upgrades, and the one instance (CONTRACT §1) sees them all.
        "x-ws-token-id": grant.tokenId,
        "x-ws-token-expires": String(Math.ceil(grant.expiresAt / 1_000)),
      };
      for (const name of FORWARDED_HANDSHAKE_HEADERS) {
        const value = req.headers[name];
        if (value !== undefined) headers[name] = value;
      }
      headers[REQUEST_ID_HEADER] = currentRequestId();
      injectTraceContext(headers);
      const left = new AbortController();
      const onClose = () => left.abort();
      // A client that gives up closes its side: an upgrade socket is half-open, so that is `end`, not `close`.
      socket.once("close", onClose);
      socket.once("end", onClose);
      const outcome = await upgradeAtSomeInstance(
        after === null ? WS_PATH : `${WS_PATH}?after=${after}`,
        headers,
        left.signal,
      );
      socket.off("close", onClose);
      socket.off("end", onClose);
      if ("answer" in outcome) {
        if (socket.destroyed || socket.readableEnded) {
          outcome.answer.socket.destroy();
          outcome.releaseSlot();
          return;
        }
        if (options.isDraining()) {
          // The gateway began to drain during the hop: no new pipe now, and the token stays usable elsewhere.
          outcome.answer.socket.destroy();
          outcome.releaseSlot();
          await giveTokenBack(grant);
          return refuseDraining(socket);
        }
        piped = true;
        options.observeUpgrade?.((performance.now() - started) / 1_000);
        socket.once("close", giveSlotBack);
        pipe(socket, head, outcome.instance, outcome.answer, outcome.releaseSlot);
        return;
      }
      if ("refusedWith" in outcome) {
        if (outcome.refusedWith === 409) return refuse(socket, 401, ErrorCode.unauthorized, TOKEN_USED_MESSAGE);
        return refuse(socket, 400, ErrorCode.validationFailed, "the chat service refused this WebSocket handshake");
      }
      await giveTokenBack(grant);
      if (options.isDraining()) return refuseDraining(socket);
      if (outcome.misconfigured) {
        return refuse(socket, 502, GatewayErrorCode.upstreamMisconfigured, MISCONFIGURED_MESSAGE);
      }
      if (outcome.busyRetryAfter !== undefined) {
        // The token is given back: the client retries with it after the instance's Retry-After.
        return refuse(socket, 503, GatewayErrorCode.upstreamBusy, "the chat service is busy: retry shortly", {
          "Retry-After": outcome.busyRetryAfter,
        });
      }
      return refuse(socket, 503, GatewayErrorCode.upstreamUnavailable, "no chat instance is reachable: retry shortly", {
        "Retry-After": "2",
      });
    } finally {
      if (!piped) giveSlotBack();
    }
  }

  /** Asks each instance that holds pipes of this gateway to close them with 1001; bounded by `timeoutMs`. */
  async function askInstancesToClose(timeoutMs: number) {
    const instances = new Set([...pipes].map((p) => p.instance));
    await Promise.all(
      [...instances].map(async (instance) => {
        try {
          const res = await fetch(`${instance.base}/internal/chat/gateways/${options.gatewayId}/close`, {
            method: "POST",
            headers: { "x-internal-token": options.internalToken },
            signal: AbortSignal.timeout(timeoutMs),
          });
          await res.body?.cancel();
          if (!res.ok) log.warn({ upstream: instance.base, status: res.status }, "instance did not close our sockets");
        } catch (error) {
          log.warn({ err: error, upstream: instance.base }, "could not ask an instance to close our sockets");
        }
      }),
    );
  }

  return {
    listener(req: IncomingMessage, socket: Duplex, head: Buffer) {
      // First, so that a client that vanishes mid-handshake cannot crash the process. One shared listener:
      // a closure over `req` would keep the request (its headers, and the ws-token in its URL) for as long
      // as the pipe lives.
      socket.on("error", onClientSocketError);
      handshakesInProgress += 1;
      // Every line logged for this upgrade carries its id, which goes on to the instance too.
      const started = performance.now();
      upgradeScope(req, () => handle(req, socket, head, started))
        .catch((error) => {
          log.error({ err: error, url: redactUrl(req.url) }, "upgrade failed");
          socket.destroy();
        })
        .finally(() => {
          handshakesInProgress -= 1;
        });
    },
    counters,
    openPipes: () => pipes.size,
    /**
     * Lets pipes close by themselves until shortly before `deadlineMs`, then asks their instances to close
     * them with 1001 (the gateway cannot write a WebSocket frame into a raw pipe without parsing it), and
     * destroys what is still open at the deadline.
     */
    async drain(deadlineMs: number) {
      const deadline = Date.now() + deadlineMs;
      // Upgrades still waiting for a slot open nothing now: each is refused as the gateway shuts down.
      for (const instance of upstreams.all) instance.upgrades.withdrawAll();
      const askAt = deadline - Math.min(1_000, deadlineMs / 2);
      // Handshakes already past the draining check end within the connect timeout: in a pipe or a refusal.
      while ((pipes.size > 0 || handshakesInProgress > 0) && Date.now() < askAt) {
        await new Promise((r) => setTimeout(r, 25));
      }
      if (pipes.size > 0) await askInstancesToClose(Math.max(100, deadline - Date.now() - 100));
      while (pipes.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const remaining = [...pipes].map(({ client }) => new Promise<void>((resolve) => client.once("close", resolve)));
      for (const { client } of pipes) client.destroy();
      await Promise.all(remaining);
      caps.close();
    },
  };
}
