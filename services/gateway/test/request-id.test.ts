/**
 * The request id on the internal hop: the gateway answers with it and passes it to the chat instance, the
 * client's when it is sane and its own otherwise, for REST requests and for upgrades alike.
 */
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type E2EGateway, randomSecret, startE2EGateway, tryUpgrade } from "./support/e2e.ts";

describe("request ids through the gateway", () => {
  const seen: Array<{ url: string; headers: IncomingHttpHeaders }> = [];
  let instance: Server;
  let gw: E2EGateway;

  beforeAll(async () => {
    // A stand-in instance that remembers what it was sent: 200 to REST, 503 + Retry-After to upgrades.
    instance = createServer((req, res) => {
      seen.push({ url: req.url ?? "", headers: req.headers });
      res.writeHead(200, { "content-type": "application/json" }).end("[]");
    });
    instance.on("upgrade", (req, socket) => {
      seen.push({ url: req.url ?? "", headers: req.headers });
      socket.end(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
      );
    });
    await new Promise<void>((resolve) => instance.listen(0, "127.0.0.1", resolve));
    const { port } = instance.address() as { port: number };
    gw = await startE2EGateway({ chatUpstreams: [`http://127.0.0.1:${port}`], internalToken: randomSecret() });
  });

  afterAll(async () => {
    await gw.stop();
    await new Promise((resolve) => instance.close(resolve));
  });

  it("passes a client's sane id on with a REST request, and answers with it", async () => {
    const access = await gw.devToken(31);
    const res = await gw.api(access, "GET", "/api/v1/chats", undefined, { "x-request-id": "trace-9" });
    expect(res.status).toBe(200);
    expect(res.headers["x-request-id"]).toBe("trace-9");
    expect(seen.at(-1)?.headers["x-request-id"]).toBe("trace-9");
  });

  it("makes an id when the client's is missing or not sane, and passes that one on", async () => {
    const access = await gw.devToken(32);
    for (const header of [{}, { "x-request-id": "two words" }] as Array<Record<string, string>>) {
      const res = await gw.api(access, "GET", "/api/v1/chats", undefined, header);
      const id = res.headers["x-request-id"];
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
      expect(seen.at(-1)?.headers["x-request-id"]).toBe(id);
    }
  });

  it("passes the upgrade's id on to the instance", async () => {
    const token = await gw.wsToken(await gw.devToken(33));
    const outcome = await tryUpgrade(`${gw.wsUrl}?token=${token}`, { headers: { "x-request-id": "upgrade-5" } });
    expect(outcome.kind).toBe("refused"); // the stand-in is busy
    const upgrade = seen.filter((s) => s.url.startsWith("/ws/chat")).at(-1);
    expect(upgrade?.headers["x-request-id"]).toBe("upgrade-5");
  });
});
