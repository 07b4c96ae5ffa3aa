/**
 * The AsyncAPI 3 document of the WebSocket (`GET /api/docs/websocket`): valid to AsyncAPI's own parser, one
 * message per frame type the code knows, and true to the wire: every frame a real session carries both ways
 * (a chat instance behind a gateway) validates against the schema of its type, and a frame that breaks it does
 * not.
 */
import { randomUUID } from "node:crypto";
import { Parser } from "@asyncapi/parser";
import { chatEventSchema, clientFrameSchema, serverControlFrameSchema } from "@listings-chat/shared";
import { Ajv, type ValidateFunction } from "ajv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildAsyncApiDocument, CLIENT_FRAME_IDS, SERVER_FRAME_IDS } from "../src/docs/asyncapi.ts";
import { type E2EGateway, type E2EStack, http, startE2EStack } from "./support/e2e.ts";

type Json = Record<string, any>;
const document = buildAsyncApiDocument() as Json;
const schemas = document.components.schemas as Record<string, Json>;

/**
 * The `type` a frame schema fixes (`"type": {"const": "new_message"}`); for a frame documented as alternatives
 * (`send_message`: a text send or a photo send), the type all of them fix.
 */
function typeOf(id: string): string {
  const alternatives = schemas[id]?.anyOf as Json[] | undefined;
  if (!alternatives) return schemas[id]?.properties?.type?.const as string;
  const types = new Set(alternatives.map((a) => typeOf(String(a.$ref).split("/").at(-1) ?? "")));
  if (types.size !== 1) throw new Error(`${id}'s alternatives fix different types: ${[...types].join(", ")}`);
  return [...types][0]!;
}

/** A validator per frame `type`, for one direction, from the document's components alone. */
function validatorsFor(ids: string[]): Map<string, ValidateFunction> {
  const ajv = new Ajv({ strict: false, allErrors: true });
  // The document's components as one schema that refers into itself, as `#/components/schemas/…` says.
  ajv.addSchema({ $id: "asyncapi", components: { schemas } });
  const byType = new Map<string, ValidateFunction>();
  for (const id of ids) byType.set(typeOf(id), ajv.compile({ $ref: `asyncapi#/components/schemas/${id}` }));
  return byType;
}

describe("the AsyncAPI document of the WebSocket", () => {
  it("is valid AsyncAPI 3 (AsyncAPI's own parser: no error, no warning)", async () => {
    const { document: parsed, diagnostics } = await new Parser().parse(JSON.stringify(document));
    const problems = diagnostics
      .filter((d) => d.severity <= 1)
      .map((d) => `${d.code}: ${d.message} at ${d.path.join(".")}`);
    expect(problems).toEqual([]);
    expect(parsed?.version()).toBe("3.0.0");
    expect(parsed?.channels().get("chat")?.address()).toBe("/ws/chat");
    expect(buildAsyncApiDocument({ basePath: "/chat" })).toMatchObject({ servers: { gateway: { pathname: "/chat" } } });
  });

  it("has one message for each frame type the code knows, both ways", () => {
    const serverTypes = [...chatEventSchema.options, ...serverControlFrameSchema.options].map(
      (o) => o.shape.type.value,
    );
    const clientTypes = clientFrameSchema.options.map((o) => o.shape.type.value);
    expect(SERVER_FRAME_IDS.map(typeOf).sort()).toEqual([...serverTypes].sort());
    expect(CLIENT_FRAME_IDS.map(typeOf).sort()).toEqual([...clientTypes].sort());
    const operationMessages = (name: string) =>
      (document.operations[name].messages as Json[]).map((m) => String(m.$ref).split("/").at(-1));
    expect(operationMessages("sendServerFrames")).toEqual(SERVER_FRAME_IDS);
    expect(operationMessages("receiveClientFrames")).toEqual(CLIENT_FRAME_IDS);
  });

  it("refuses what the services refuse: an unknown field, a missing one, an empty message", () => {
    const client = validatorsFor(CLIENT_FRAME_IDS);
    const send = client.get("send_message");
    expect(send?.({ type: "send_message", chat_id: 1, content: "hi", client_msg_id: "c1" })).toBe(true);
    expect(send?.({ type: "send_message", chat_id: 1, content: "   ", client_msg_id: "c1" })).toBe(false);
    expect(send?.({ type: "send_message", chat_id: 1, content: "hi" })).toBe(false);
    expect(send?.({ type: "send_message", chat_id: 1, content: "hi", client_msg_id: "c1", sender_id: 2 })).toBe(false);
    // Photos (CONTRACT §11): a caption may be empty, but only beside one to ten uploads.
    const photos = { type: "send_message", chat_id: 1, content: "", client_msg_id: "c1" };
    expect(send?.({ ...photos, attachments: ["u1"] })).toBe(true);
    expect(send?.({ ...photos, attachments: [] })).toBe(false);
    expect(send?.(photos)).toBe(false);
    expect(send?.({ ...photos, attachments: Array.from({ length: 11 }, (_, i) => `u${i}`) })).toBe(false);
    for (const frame of [
      { ...photos, attachments: ["u1"] },
      { ...photos, attachments: [] },
      { ...photos, content: "hi", attachments: [] },
    ]) {
      expect(send?.(frame), JSON.stringify(frame)).toBe(clientFrameSchema.safeParse(frame).success);
    }
    const server = validatorsFor(SERVER_FRAME_IDS);
    expect(server.get("presence")?.({ type: "presence", user_id: 1, online: "yes" })).toBe(false);
  });
});

describe("the frames of a real session against the document", () => {
  let stack: E2EStack;
  let gw: E2EGateway;
  beforeAll(async () => {
    stack = await startE2EStack();
    gw = stack.gw;
  }, 60_000);
  afterAll(async () => {
    await stack?.stop();
  });

  it("validates every frame both ways, of every type a chat goes through", async () => {
    const [buyer, seller] = [9301, 9302];
    const buyerToken = gw.accessToken(buyer);
    const sellerToken = gw.accessToken(seller);
    const sellerSocket = await gw.connectAs(seller);
    const buyerSocket = await gw.connectAs(buyer);
    const sent: Json[] = [];
    const send = (frame: Json) => {
      sent.push(frame);
      buyerSocket.send(frame);
    };
    const created = await gw.api(buyerToken, "POST", "/api/v1/chats", { listing_id: 4, seller_id: seller });
    const chatId = created.body.id as number;
    send({ type: "ping" });
    const ref = randomUUID();
    send({ type: "send_message", chat_id: chatId, content: "Does it come with a charger?", client_msg_id: ref });
    await buyerSocket.waitFor((f) => f.type === "ack" && f.ref === ref);
    const reply = await gw.api(sellerToken, "POST", `/api/v1/chats/${chatId}/messages`, { content: "Yes, two." });
    // Typing and presence are shared once the two are contacts: the seller has replied.
    send({ type: "typing", chat_id: chatId, is_typing: true });
    send({ type: "mark_read", chat_id: chatId, message_id: reply.body.id });
    await gw.api(sellerToken, "PATCH", `/api/v1/messages/${reply.body.id}`, { content: "Yes, two of them." });
    await gw.api(sellerToken, "DELETE", `/api/v1/messages/${reply.body.id}`);
    await gw.api(buyerToken, "POST", `/api/v1/chats/${chatId}/archive`);
    await gw.api(buyerToken, "POST", `/api/v1/users/${seller}/block`);
    await gw.api(buyerToken, "DELETE", `/api/v1/users/${seller}/block`);
    send({ type: "resume", after: 0 });
    // A frame the server refuses: its `error` frame is in the document too.
    send({ type: "send_message", chat_id: chatId, content: "", client_msg_id: randomUUID() });
    await buyerSocket.waitFor((f) => f.type === "error");
    await buyerSocket.waitFor((f) => f.type === "user_unblocked");
    await sellerSocket.waitFor((f) => f.type === "message_read");
    await sellerSocket.waitFor((f) => f.type === "typing");

    const received = [...buyerSocket.frames, ...sellerSocket.frames] as Json[];
    const server = validatorsFor(SERVER_FRAME_IDS);
    const seenTypes = new Set<string>();
    for (const frame of received) {
      const validate = server.get(frame.type);
      expect(validate, `no message for the server's "${frame.type}" frame`).toBeDefined();
      expect(validate?.(frame), `${JSON.stringify(frame)}: ${JSON.stringify(validate?.errors)}`).toBe(true);
      seenTypes.add(frame.type);
    }
    // Every frame the server can send came at least once.
    for (const type of SERVER_FRAME_IDS.map(typeOf)) {
      expect(seenTypes, `no "${type}" frame in the session`).toContain(type);
    }
    const client = validatorsFor(CLIENT_FRAME_IDS);
    for (const frame of sent.filter((f) => f.content !== "")) {
      const validate = client.get(frame.type);
      expect(validate?.(frame), `${JSON.stringify(frame)}: ${JSON.stringify(validate?.errors)}`).toBe(true);
    }
    expect(new Set(sent.map((f) => f.type))).toEqual(new Set(CLIENT_FRAME_IDS.map(typeOf)));
    await Promise.all([buyerSocket.close(), sellerSocket.close()]);
  });

  it("is served by the gateway", async () => {
    const answer = await http(gw.baseUrl, "GET", "/api/docs/websocket");
    expect(answer.status).toBe(200);
    expect(answer.body).toEqual(document);
  });
});
