/**
 * BASE_PATH: the gateway with every public path under `/chat`, in front of a real chat instance, as a
 * monolith's edge that routes one prefix to it would use it.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadGatewayConfig } from "../src/env.ts";
import { type E2EGateway, type E2EStack, http, startE2EStack, tryUpgrade } from "./support/e2e.ts";

describe("a gateway with BASE_PATH=/chat", () => {
  let stack: E2EStack;
  let gw: E2EGateway;
  let base: string;
  beforeAll(async () => {
    stack = await startE2EStack({ basePath: "/chat" });
    gw = stack.gw;
    base = gw.baseUrl;
  }, 60_000);
  afterAll(async () => {
    await stack?.stop();
  });

  const token = async (userId: number) =>
    (await http(base, "POST", "/chat/api/dev/token", { body: { user_id: userId } })).body.access_token as string;

  it("carries REST, the ws-token and the upgrade under the prefix, and a chat end to end", async () => {
    const [alice, bob] = [await token(7001), await token(7002)];
    const created = await http(base, "POST", "/chat/api/v1/chats", {
      headers: { authorization: `Bearer ${alice}` },
      body: { listing_id: 3, seller_id: 7002 },
    });
    expect(created.status).toBe(201);
    const open = async (access: string) => {
      const ticket = await http(base, "POST", "/chat/api/v2/ws-token", {
        headers: { authorization: `Bearer ${access}` },
      });
      // The answer names the public path, prefix included: a client resolves it on the gateway's origin.
      expect(ticket.body.ws_url).toBe("/chat/ws/chat");
      const outcome = await tryUpgrade(`${base.replace("http", "ws")}${ticket.body.ws_url}?token=${ticket.body.token}`);
      if (outcome.kind !== "open") throw new Error(`upgrade under /chat failed: ${JSON.stringify(outcome)}`);
      await outcome.socket.waitFor((f) => f.type === "connected");
      return outcome.socket;
    };
    const [aliceSocket, bobSocket] = [await open(alice), await open(bob)];
    const ref = randomUUID();
    aliceSocket.send({ type: "send_message", chat_id: created.body.id, content: "under /chat", client_msg_id: ref });
    await aliceSocket.waitFor((f) => f.type === "ack" && f.ref === ref);
    expect(await bobSocket.waitFor((f) => f.type === "new_message")).toMatchObject({
      message: { content: "under /chat" },
    });
    // A REST body passes through the prefix whole.
    const sent = await http(base, "POST", `/chat/api/v1/chats/${created.body.id}/messages`, {
      headers: { authorization: `Bearer ${bob}` },
      body: { content: "a reply over REST", client_msg_id: randomUUID() },
    });
    expect(sent.status).toBe(201);
    expect(sent.body.content).toBe("a reply over REST");
    await Promise.all([aliceSocket.close(), bobSocket.close()]);
  });

  it("answers nothing outside the prefix but the probes, and hides /internal inside it", async () => {
    const alice = await token(7003);
    const outside = await http(base, "GET", "/api/v1/chats", { headers: { authorization: `Bearer ${alice}` } });
    expect(outside.status).toBe(404);
    expect(outside.body.error.message).toContain("this gateway serves under /chat/");
    expect((await http(base, "GET", "/chatroom/api/v1/chats")).status).toBe(404);
    const ticket = await http(base, "POST", "/chat/api/v2/ws-token", { headers: { authorization: `Bearer ${alice}` } });
    const rootSocket = await tryUpgrade(`${base.replace("http", "ws")}/ws/chat?token=${ticket.body.token}`);
    expect(rootSocket.kind === "refused" && rootSocket.status).toBe(404);
    expect(rootSocket.kind === "refused" && rootSocket.body.error.message).toContain("/chat/ws/chat");
    // The refusal left the ws-token unused: it opens a socket at the right path.
    const right = await tryUpgrade(`${base.replace("http", "ws")}/chat/ws/chat?token=${ticket.body.token}`);
    expect(right.kind).toBe("open");
    if (right.kind === "open") await right.socket.close();

    for (const probe of ["/health", "/chat/health"]) expect((await http(base, "GET", probe)).status, probe).toBe(200);
    for (const hidden of ["/chat/internal/chat/ws/stats", "/internal/chat/ws/stats"]) {
      expect((await http(base, "GET", hidden)).status, hidden).toBe(404);
    }
    const bare = await http(base, "GET", "/chat?x=1");
    expect(bare.status).toBe(308);
    expect(bare.headers.location).toBe("/chat/?x=1");
  });

  it("describes itself under the prefix: the OpenAPI servers, and the demo page with relative links", async () => {
    const docs = await http(base, "GET", "/chat/api/docs");
    expect(docs.status).toBe(200);
    expect(docs.body.servers).toEqual([{ url: "/chat", description: "this gateway" }]);
    const page = await http(base, "GET", "/chat/");
    expect(page.status).toBe(200);
    expect(page.text).toContain('src="demo/app.js"');
    expect((await http(base, "GET", "/chat/demo/app.js")).status).toBe(200);
  });
});

describe("BASE_PATH in the gateway's configuration", () => {
  it("is a prefix of path segments: a leading slash, no trailing one, no dot segments", () => {
    for (const good of ["/chat", "/marketplace/chat", "/v2.chat", "/a_b~c-d"]) {
      expect(loadGatewayConfig({ BASE_PATH: good }).basePath, good).toBe(good);
    }
    expect(loadGatewayConfig({}).basePath).toBe("");
    for (const bad of ["chat", "/chat/", "/", "/../chat", "/a/./b", "/ch at", "/chat?x", "/%2e%2e"]) {
      expect(() => loadGatewayConfig({ BASE_PATH: bad }), bad).toThrow(/BASE_PATH.*path prefix like \/chat/);
    }
  });
});
