/**
 * The includable nginx snippet (nginx/listings-chat.*.conf) in a monolith's own server block, as its edge would
 * have it: the monolith keeps `location /`, real_ip trusts the edge in front (here, this machine), and the chat
 * lives under /chat/ with the gateway's BASE_PATH=/chat. Debian's nginx; the demo page through it in Chromium.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { byTestId, hasChromium, launchChromium, openUserPage, waitForMode } from "./support/demo-browser.ts";
import { type E2EGateway, type E2EStack, http, startE2EStack, tryUpgrade } from "./support/e2e.ts";
import { hasNginx, NGINX_DIR, runNginx, type TestNginx, tempPaths } from "./support/nginx.ts";

const SNIPPETS = ["listings-chat.http.conf", "listings-chat.locations.conf", "listings-chat.proxy.conf"];

/** The monolith's nginx: its own page at `/`, the snippet included, the upstream pointed at `upstreamPort`. */
function monolithNginx(upstreamPort: number): Promise<TestNginx> {
  return runNginx((dir, port) => {
    const files: Record<string, string> = {};
    for (const name of SNIPPETS) files[name] = readFileSync(join(NGINX_DIR, name), "utf8");
    const httpSnippet = files["listings-chat.http.conf"] ?? "";
    files["listings-chat.http.conf"] = httpSnippet.replace("server gateway:3000", `server 127.0.0.1:${upstreamPort}`);
    if (files["listings-chat.http.conf"] === httpSnippet) throw new Error("listings-chat.http.conf changed shape");
    files["nginx.conf"] = `
pid ${dir}/nginx.pid;${process.getuid?.() === 0 ? "\nuser root;" : ""}
error_log stderr crit;
events { worker_connections 256; }
http {
  ${tempPaths(dir)}
  # The monolith's access log, in nginx's usual format: the whole request line, query string included.
  access_log ${dir}/access.log combined;
  include listings-chat.http.conf;
  server {
    listen 127.0.0.1:${port};
    # The monolith trusts the edge in front of it (here: this machine) to say who the client is.
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    real_ip_recursive on;
    location / {
      default_type text/plain;
      return 200 "the monolith's own page\\n";
    }
    location = /ready-probe {
      return 200 "ok\\n";
    }
    include listings-chat.locations.conf;
  }
}
`;
    return files;
  }, "/ready-probe");
}

describe.runIf(hasNginx)("nginx/listings-chat.*.conf included in a monolith's server block", () => {
  let stack: E2EStack;
  let gw: E2EGateway;
  let nginx: TestNginx;
  beforeAll(async () => {
    stack = await startE2EStack({ basePath: "/chat" });
    gw = stack.gw;
    nginx = await monolithNginx(gw.gateway.port);
  }, 60_000);
  afterAll(async () => {
    await nginx?.stop();
    await stack?.stop();
  });

  it("leaves the monolith its paths and carries a chat under /chat/: REST, ws-token, upgrade, frames", async () => {
    const home = await http(nginx.base, "GET", "/");
    expect(home.text).toBe("the monolith's own page\n");
    expect((await http(nginx.base, "GET", "/api/v1/chats")).text).toBe("the monolith's own page\n");

    const token = async (userId: number) =>
      (await http(nginx.base, "POST", "/chat/api/dev/token", { body: { user_id: userId } })).body
        .access_token as string;
    const [alice, bob] = [await token(8101), await token(8102)];
    const created = await http(nginx.base, "POST", "/chat/api/v1/chats", {
      headers: { authorization: `Bearer ${alice}` },
      body: { listing_id: 5, seller_id: 8102 },
    });
    expect(created.status).toBe(201);
    const tokens: string[] = [];
    const open = async (access: string) => {
      const ticket = await http(nginx.base, "POST", "/chat/api/v2/ws-token", {
        headers: { authorization: `Bearer ${access}` },
      });
      tokens.push(ticket.body.token);
      const outcome = await tryUpgrade(
        `${nginx.base.replace("http", "ws")}${ticket.body.ws_url}?token=${ticket.body.token}`,
      );
      if (outcome.kind !== "open") throw new Error(`upgrade through the snippet failed: ${JSON.stringify(outcome)}`);
      await outcome.socket.waitFor((f) => f.type === "connected");
      return outcome.socket;
    };
    const [aliceSocket, bobSocket] = [await open(alice), await open(bob)];
    const ref = randomUUID();
    aliceSocket.send({
      type: "send_message",
      chat_id: created.body.id,
      content: "via the snippet",
      client_msg_id: ref,
    });
    await aliceSocket.waitFor((f) => f.type === "ack" && f.ref === ref);
    expect(await bobSocket.waitFor((f) => f.type === "new_message")).toMatchObject({
      message: { content: "via the snippet" },
    });
    await Promise.all([aliceSocket.close(), bobSocket.close()]);

    // The monolith's own access log logs whole request lines: the upgrades, with their ws-tokens, are not in it.
    const accessLog = readFileSync(join(nginx.dir(), "access.log"), "utf8");
    expect(accessLog).toContain("POST /chat/api/v2/ws-token");
    for (const used of tokens) expect(accessLog).not.toContain(used);
  });

  it("hides the ops endpoints under the prefix", async () => {
    for (const path of ["/chat/internal/chat/ws/stats", "/chat/internal", "/chat/metrics"]) {
      const answer = await http(nginx.base, "GET", path);
      expect(answer.status, path).toBe(404);
      expect(answer.body, path).toEqual({ error: { code: "not_found", message: "not found" } });
    }
  });

  it.runIf(hasChromium)("serves the demo page under /chat/ to Chromium, live", async () => {
    const browser = await launchChromium();
    try {
      const user = await openUserPage(browser, `${nginx.base}/chat`, 8103);
      await waitForMode(user, "live", 20_000);
      expect(user.requestedPaths.filter((path) => !path.startsWith("/chat/"))).toEqual([]);
      expect(await user.page.textContent(byTestId("mode"))).toBe("live");
      expect(user.pageErrors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});

describe.runIf(hasNginx)("the snippet's forwarding headers and errors (a stand-in gateway that echoes them)", () => {
  let seen: IncomingHttpHeaders[] = [];
  let echo: Server;
  let nginx: TestNginx;
  beforeAll(async () => {
    echo = createServer((req, res) => {
      seen.push(req.headers);
      res.setHeader("content-type", "application/json");
      res.end('{"ok":true}');
    });
    await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
    nginx = await monolithNginx((echo.address() as AddressInfo).port);
  }, 30_000);
  afterAll(async () => {
    await nginx?.stop();
    await new Promise((resolve) => echo?.close(resolve));
  });

  it("keeps the edge's X-Forwarded-For chain, appends its peer, and sends the real client as X-Real-IP", async () => {
    seen = [];
    await http(nginx.base, "GET", "/chat/api/docs", {
      headers: { "x-forwarded-for": "203.0.113.7, 198.51.100.2", "x-user-id": "1", "x-internal-token": "forged" },
    });
    const [headers] = seen;
    expect(headers?.["x-forwarded-for"]).toBe("203.0.113.7, 198.51.100.2, 127.0.0.1");
    // real_ip_recursive: the right-most address not trusted is the client.
    expect(headers?.["x-real-ip"]).toBe("198.51.100.2");
    // Identity headers a client sent never pass.
    expect(headers?.["x-user-id"]).toBeUndefined();
    expect(headers?.["x-internal-token"]).toBeUndefined();
    expect(headers?.["x-request-id"]).toMatch(/^[0-9a-f]{32}$/);
    seen = [];
    await http(nginx.base, "GET", "/chat/api/docs");
    expect(seen[0]?.["x-forwarded-for"]).toBe("127.0.0.1");
  });

  it("answers in the chat's JSON when the gateway is gone", async () => {
    await new Promise((resolve) => echo.close(resolve));
    const answer = await http(nginx.base, "GET", "/chat/api/v1/chats");
    expect(answer.status).toBe(503);
    expect(answer.headers["retry-after"]).toBe("2");
    expect(answer.body.error.code).toBe("upstream_unavailable");
  });
});
