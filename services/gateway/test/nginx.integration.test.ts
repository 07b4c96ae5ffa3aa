import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type E2EChat,
  type E2EGateway,
  http,
  pollUntil,
  randomSecret,
  startE2EChat,
  startE2EGateway,
  tryUpgrade,
} from "./support/e2e.ts";
import { hasNginx, startNginx, type TestNginx } from "./support/nginx.ts";

describe.runIf(hasNginx)("nginx/nginx.conf in front of the gateway (Debian's nginx)", () => {
  const internalToken = randomSecret();
  let chat: E2EChat;
  let gw: E2EGateway;
  let nginx: TestNginx;
  let base: string;
  const accessLog = () => nginx.output();

  beforeAll(async () => {
    chat = await startE2EChat({ database: { inMemory: true }, internalToken });
    gw = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken });
    nginx = await startNginx(gw.gateway.port);
    base = nginx.base;
  }, 60_000);

  afterAll(async () => {
    await nginx?.stop();
    await gw?.stop();
    await chat?.stop();
  });

  it("carries a chat end to end: REST, ws-token, the upgrade, frames both ways", async () => {
    const token = async (userId: number) =>
      (await http(base, "POST", "/api/dev/token", { body: { user_id: userId } })).body.access_token as string;
    const [alice, bob] = [await token(9001), await token(9002)];
    const created = await http(base, "POST", "/api/v1/chats", {
      headers: { authorization: `Bearer ${alice}` },
      body: { listing_id: 1, seller_id: 9002 },
    });
    expect(created.status).toBe(201);
    const open = async (access: string) => {
      const ws = await http(base, "POST", "/api/v2/ws-token", { headers: { authorization: `Bearer ${access}` } });
      const outcome = await tryUpgrade(`${base.replace("http", "ws")}/ws/chat?token=${ws.body.token}`);
      if (outcome.kind !== "open") throw new Error(`upgrade through nginx failed: ${JSON.stringify(outcome)}`);
      await outcome.socket.waitFor((f) => f.type === "connected");
      return outcome.socket;
    };
    const [aliceSocket, bobSocket] = [await open(alice), await open(bob)];
    const ref = randomUUID();
    aliceSocket.send({ type: "send_message", chat_id: created.body.id, content: "through nginx", client_msg_id: ref });
    await aliceSocket.waitFor((f) => f.type === "ack" && f.ref === ref);
    const received = await bobSocket.waitFor((f) => f.type === "new_message");
    expect(received).toMatchObject({ type: "new_message", message: { content: "through nginx" } });
    await Promise.all([aliceSocket.close(), bobSocket.close()]);
  });

  it("names every request: nginx's id replaces the client's, the gateway answers it, the access log has it", async () => {
    const res = await http(base, "GET", "/api/v1/chats", { headers: { "x-request-id": "from-the-client" } });
    const id = res.headers["x-request-id"];
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(await pollUntil(() => accessLog().includes(`req_id=${id}`), 5_000)).toBe(true);
  });

  it("refuses /metrics and every spelling of /internal, in JSON", async () => {
    for (const path of [
      "/metrics",
      "/internal",
      "/internal/chat/ws/stats",
      "/%69nternal/chat/ws/stats",
      "//internal/x",
    ]) {
      const res = await http(base, "GET", path, { headers: { "x-internal-token": internalToken } });
      expect(res.status, path).toBe(404);
      expect(res.body, path).toEqual({ error: { code: "not_found", message: expect.any(String) } });
    }
    // The same metrics answer on the gateway's own port, with the token: only nginx hides them.
    expect((await http(gw.baseUrl, "GET", "/metrics", { headers: { "x-internal-token": internalToken } })).status).toBe(
      200,
    );
  });

  it("answers its own errors in the contract's JSON", async () => {
    const big = await http(base, "POST", "/api/v1/chats", {
      headers: { authorization: "Bearer x" },
      body: "x".repeat(70 * 1024),
    });
    expect(big.status).toBe(413);
    expect(big.body).toEqual({ error: { code: "payload_too_large", message: expect.any(String) } });
  });

  it("never writes a query string (a ws-token) to its log", async () => {
    await http(base, "GET", "/ws/chat?token=secret-token-value&after=1");
    await pollUntil(() => accessLog().includes("/ws/chat"), 2_000);
    expect(accessLog()).toContain("/ws/chat");
    expect(accessLog()).not.toContain("secret-token-value");
  });
});
