/**
 * CORS_ORIGINS in real Chromium: a page on another origin than the gateway's (http://localhost:<port> against
 * the gateway on 127.0.0.1) fetches a ws-token with its Bearer token (a preflight first), reads a 401's body,
 * and opens the WebSocket it names; the same page served from an origin not listed cannot read anything.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHROMIUM, hasChromium, launchChromium, requireChromium } from "./support/demo-browser.ts";
import { type E2EChat, type E2EGateway, randomSecret, startE2EChat, startE2EGateway } from "./support/e2e.ts";

requireChromium("cors.e2e.test.ts");

/** What the page on the other origin did, as it reports it. */
interface CrossOriginReport {
  ticket: { status: number; ws_url?: string } | { blocked: string };
  refused: { status: number; code?: string } | { blocked: string };
  socket: string;
}

/** The page's script: runs against `gateway` with `token`, and reports. */
const PAGE = `<!doctype html><meta charset="utf-8"><title>monolith</title><script>
async function run(gateway, token) {
  const report = {};
  try {
    const res = await fetch(gateway + "/api/v2/ws-token", { method: "POST", headers: { authorization: "Bearer " + token } });
    report.ticket = { status: res.status, ...(await res.json()) };
  } catch (error) { report.ticket = { blocked: String(error) }; }
  try {
    const res = await fetch(gateway + "/api/v1/chats", { headers: { authorization: "Bearer not-a-token" } });
    report.refused = { status: res.status, code: (await res.json()).error?.code };
  } catch (error) { report.refused = { blocked: String(error) }; }
  report.socket = report.ticket.ws_url
    ? await new Promise((resolve) => {
        const ws = new WebSocket(gateway.replace("http", "ws") + report.ticket.ws_url + "?token=" + encodeURIComponent(report.ticket.token));
        ws.onmessage = (m) => { resolve(JSON.parse(m.data).type); ws.close(); };
        ws.onclose = () => resolve("closed");
        setTimeout(() => resolve("no frame"), 5000);
      })
    : "not tried";
  return report;
}
</script>`;

describe.skipIf(!hasChromium)(
  hasChromium
    ? "CORS_ORIGINS in Chromium: a page on a listed origin uses the API and the socket; another cannot"
    : `CORS_ORIGINS in Chromium: SKIPPED, ${CHROMIUM} is missing (apt-get install -y chromium)`,
  () => {
    const internalToken = randomSecret();
    let chat: E2EChat;
    let gw: E2EGateway;
    let site: Server;
    let sitePort: number;
    let browser: Browser;

    beforeAll(async () => {
      site = createServer((_req, res) => res.writeHead(200, { "content-type": "text/html" }).end(PAGE));
      await new Promise<void>((resolve) => site.listen(0, "127.0.0.1", resolve));
      sitePort = (site.address() as AddressInfo).port;
      chat = await startE2EChat({ database: { inMemory: true }, internalToken });
      gw = await startE2EGateway({
        chatUpstreams: [chat.baseUrl],
        internalToken,
        config: { corsOrigins: [`http://localhost:${sitePort}`] },
      });
      browser = await launchChromium();
    });

    afterAll(async () => {
      await browser?.close();
      await gw?.stop();
      await chat?.stop();
      site?.closeAllConnections();
      await new Promise((resolve) => site?.close(resolve));
    });

    async function runFrom(origin: string): Promise<CrossOriginReport> {
      const context = await browser.newContext();
      try {
        const page = await context.newPage();
        await page.goto(`${origin}/`);
        const token = await gw.devToken(41);
        return (await page.evaluate(
          ({ gateway, accessToken }) =>
            (globalThis as unknown as { run(gateway: string, token: string): unknown }).run(gateway, accessToken),
          { gateway: gw.baseUrl, accessToken: token },
        )) as CrossOriginReport;
      } finally {
        await context.close();
      }
    }

    it("serves a listed origin: the ws-token after its preflight, a readable 401, and a live socket", async () => {
      const report = await runFrom(`http://localhost:${sitePort}`);
      expect(report.ticket).toMatchObject({ status: 200, ws_url: "/ws/chat" });
      expect(report.refused).toEqual({ status: 401, code: "unauthorized" });
      expect(report.socket).toBe("connected");
    });

    it("serves nothing readable to an origin not listed", async () => {
      const report = await runFrom(`http://127.0.0.1:${sitePort}`);
      expect(report.ticket).toMatchObject({ blocked: expect.stringContaining("Failed to fetch") });
      expect(report.refused).toMatchObject({ blocked: expect.stringContaining("Failed to fetch") });
      expect(report.socket).toBe("not tried");
    });
  },
);
