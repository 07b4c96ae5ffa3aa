import { randomBytes } from "node:crypto";
import { ChatClient, type ChatClientMode, type ChatEvent } from "@listings-chat/client";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type E2EChat, type E2EGateway, startE2EChat, startE2EGateway } from "./support/e2e.ts";

/**
 * The shared ChatClient against a real gateway and a real listings-chat, over real sockets: on Node's global
 * WebSocket, the same WHATWG API as the browser's, found the way the browser build finds it (no `webSocket` option).
 */
describe("ChatClient against the real services", () => {
  let chat: E2EChat;
  let gw: E2EGateway;
  const clients: ChatClient[] = [];

  beforeAll(async () => {
    const internalToken = randomBytes(24).toString("hex");
    chat = await startE2EChat({ database: { inMemory: true }, internalToken });
    gw = await startE2EGateway({ chatUpstreams: [chat.baseUrl], internalToken });
  });

  afterAll(async () => {
    for (const client of clients) client.stop();
    await gw?.stop();
    await chat?.stop();
  });

  function clientFor(userId: number) {
    const token = gw.accessToken(userId);
    const client = new ChatClient({
      baseUrl: gw.baseUrl,
      getAccessToken: () => token,
    });
    const events: ChatEvent[] = [];
    const modes: ChatClientMode[] = [];
    client.on("event", (e) => events.push(e));
    client.on("mode", ({ to }) => modes.push(to));
    clients.push(client);
    return { client, events, modes };
  }

  it("goes live, sends both ways, and hands every event once, in log order", async () => {
    const buyer = clientFor(501);
    const seller = clientFor(502);
    buyer.client.start();
    seller.client.start();
    await vi.waitFor(() => expect([buyer.client.mode, seller.client.mode]).toEqual(["live", "live"]), {
      timeout: 5_000,
    });

    const chatRow = await buyer.client.api.openChat(9, 502);
    const sent: number[] = [];
    for (let i = 0; i < 5; i++) {
      sent.push((await buyer.client.send(chatRow.id, `from buyer ${i}`)).id);
      sent.push((await seller.client.send(chatRow.id, `from seller ${i}`)).id);
    }
    const log = await seller.client.api.events(0);
    const expectedIds = log.events.map((e) => e.event_id);
    await vi.waitFor(() => expect(seller.events.map((e) => e.event_id)).toEqual(expectedIds), { timeout: 5_000 });
    await vi.waitFor(() => expect(buyer.events.map((e) => e.event_id)).toEqual(expectedIds), { timeout: 5_000 });
    const stored = await buyer.client.api.messages(chatRow.id, { limit: 100 });
    expect(stored.messages.map((m) => m.id).reverse()).toEqual(sent);

    await seller.client.markRead(chatRow.id, sent.at(-2) ?? 0);
    expect(seller.client.unread.chats[String(chatRow.id)]).toBeUndefined();
    await vi.waitFor(() => expect(buyer.events.some((e) => e.type === "message_read")).toBe(true));
    expect(buyer.modes).toEqual(["connecting", "live"]);
  });
});
