/**
 * A property over the gateway process: whatever method, path, headers and body a client sends (signed in
 * or not, upgrade or not), the gateway answers or closes, stays up, and forwards nothing but the chat API
 * and the WebSocket path: no spelling ever reaches `/internal` on an instance.
 */
import { randomBytes } from "node:crypto";
import { connect as netConnect } from "node:net";
import fc from "fast-check";
import jwt from "jsonwebtoken";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isInternalPath } from "../src/app.ts";
import { http } from "./support/e2e.ts";
import { type MisbehavingInstance, startMisbehavingInstance } from "./support/misbehaving-instance.ts";
import { type ServiceProcess, startGatewayProcess } from "./support/processes.ts";

const jwtSecret = randomBytes(24).toString("hex");
const validToken = jwt.sign({ sub: "77" }, jwtSecret, { algorithm: "HS256", expiresIn: 3_600 });

/**
 * Sends `request` on a new connection and waits until the gateway closes it, or gives up after `ms`. With
 * `halfClose` the client ends its side at once (FIN after the request): Node's server then ends the connection
 * and drops the request as a client that left, and the gateway forwards nothing (verifying the token is
 * asynchronous); without it, the client waits for the answer like a browser.
 */
function exchange(port: number, request: Buffer, halfClose: boolean, ms = 3_000): Promise<string> {
  return new Promise((resolve) => {
    const socket = netConnect({ port, host: "127.0.0.1" });
    const chunks: Buffer[] = [];
    socket.on("data", (c: Buffer) => chunks.push(c));
    socket.on("error", () => {});
    const timer = setTimeout(() => socket.destroy(), ms);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString("latin1"));
    });
    socket.once("connect", () => (halfClose ? socket.end(request) : socket.write(request)));
  });
}

const methods = fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "get");
const prefixes = fc.constantFrom(
  "/api/v1/chats",
  "/api/v1/chats/1/messages",
  "/api/v1/messages/1",
  "/api/v1/events",
  "/api/v1",
  "/api/v2/ws-token",
  "/ws/chat",
  "/internal",
  "/metrics",
  "/",
  "",
  "*",
  "http://127.0.0.1/internal",
);
const suffixes = fc.constantFrom(
  "",
  "/..",
  "/../..",
  "/%2e%2e/%2e%2e",
  "/..%2f..%2f..%2finternal",
  "/internal/chat/ws/stats",
  "//internal",
  "/%69nternal",
  "/%2Finternal",
  "\\..\\internal",
  "/./",
  "?after=0",
  "?token=x&after=1",
  "#x",
  "/%00",
  "/%",
  "/\u00e9",
);
const headerSets = fc.array(
  fc.constantFrom<Array<[string, string]>>(
    [["Authorization", `Bearer ${validToken}`]],
    [["Authorization", "Bearer not.a.jwt"]],
    [["Authorization", "Basic dXNlcjpwYXNz"]],
    [["Cookie", `access_token=${validToken}`]],
    [["Cookie", "access_token=%zz"]],
    [
      ["Upgrade", "websocket"],
      ["Connection", "Upgrade"],
      ["Sec-WebSocket-Version", "13"],
      ["Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="],
    ],
    [
      ["Upgrade", "h2c"],
      ["Connection", "Upgrade"],
    ],
    [["X-Internal-Token", "guess"]],
    [["X-User-Id", "1"]],
    [["Content-Type", "application/json"]],
    [["Content-Type", "text/plain"]],
    [["Sec-Fetch-Site", "cross-site"]],
    [["Expect", "100-continue"]],
    [["Transfer-Encoding", "chunked"]],
    [["Host", ""]],
  ),
  { maxLength: 5 },
);

describe("the gateway process under random requests", () => {
  let instance: MisbehavingInstance;
  let gateway: ServiceProcess;

  beforeAll(async () => {
    instance = await startMisbehavingInstance({ answer: 200 });
    gateway = await startGatewayProcess({
      CHAT_UPSTREAMS: instance.url,
      INTERNAL_TOKEN: randomBytes(24).toString("hex"),
      JWT_SECRET: jwtSecret,
      WS_TOKEN_SECRET: randomBytes(24).toString("hex"),
      BODY_TIMEOUT_MS: "500",
      UPSTREAM_CONNECT_TIMEOUT_MS: "300",
    });
  }, 60_000);

  afterAll(async () => {
    await gateway?.stop();
    await instance?.close();
  });

  it("never crashes and never forwards anything but the chat API and the WebSocket path", async () => {
    await fc.assert(
      fc.asyncProperty(
        methods,
        prefixes,
        suffixes,
        headerSets,
        fc.uint8Array({ maxLength: 300 }),
        fc.boolean(),
        fc.boolean(),
        async (method, prefix, suffix, headers, body, declareLength, halfClose) => {
          const lines = [`${method} ${prefix}${suffix} HTTP/1.1`, "Host: 127.0.0.1", "Connection: close"];
          for (const [name, value] of headers.flat()) lines.push(`${name}: ${value}`);
          if (declareLength && !headers.flat().some(([name]) => name === "Transfer-Encoding")) {
            lines.push(`Content-Length: ${body.length}`);
          }
          const request = Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1"), body]);
          await exchange(gateway.port, request, halfClose);
          expect(gateway.alive(), gateway.output()).toBe(true);
        },
      ),
      {
        numRuns: 300,
        // Always among the runs, whatever the seed: requests that must be forwarded, so that the checks
        // below are never about an instance that saw nothing (random runs alone did not always get one).
        examples: [
          ["GET", "/api/v1/chats", "", [[["Authorization", `Bearer ${validToken}`]]], new Uint8Array(), false, false],
          [
            "GET",
            "/api/v1/events",
            "?after=0",
            [[["Cookie", `access_token=${validToken}`]]],
            new Uint8Array(),
            false,
            false,
          ],
          [
            "POST",
            "/api/v1/chats",
            "",
            [[["Authorization", `Bearer ${validToken}`]], [["Content-Type", "application/json"]]],
            new TextEncoder().encode('{"listing_id":1,"seller_id":2}'),
            true,
            false,
          ],
        ],
      },
    );
    expect((await http(gateway.baseUrl, "GET", "/health")).status).toBe(200);
    // What reached the instance: request lines "METHOD target HTTP/1.1".
    const targets = instance.seen.map((line) => line.split(" ")[1] ?? "");
    for (const target of targets) {
      const path = target.split("?")[0] ?? "";
      expect(isInternalPath(path), target).toBe(false);
      expect(path, target).toMatch(/^\/api\/v1(\/[A-Za-z0-9_-]+)*\/?$|^\/ws\/chat$/);
    }
    // The examples reached it: the property was exercised, not vacuous.
    expect(targets).toEqual(expect.arrayContaining(["/api/v1/chats", "/api/v1/events?after=0"]));
  }, 120_000);
});
