import SwaggerParser from "@apidevtools/swagger-parser";
import { devTokenRequestSchema, Limits, reportBody, sendMessageBody } from "@listings-chat/shared";
import { describe, expect, it } from "vitest";
import { devTokenBody } from "../src/dev/dev-token.ts";
import { buildOpenApiDocument, createDocsRoutes } from "../src/docs/openapi.ts";
import { answerChecker } from "./support/openapi-answers.ts";

type Json = Record<string, any>;

const doc = (devAuth: boolean) => buildOpenApiDocument({ devAuth }) as Json;

/** Follows one local `$ref` ("#/components/schemas/X") inside `document`. */
function deref(document: Json, node: Json): Json {
  if (typeof node.$ref !== "string") return node;
  const [hash, ...parts] = node.$ref.split("/");
  expect(hash).toBe("#");
  return parts.reduce<Json>((at, key) => at[key], document);
}

/** Every operation of the document as [path, method, operation]. */
function operations(document: Json): [string, string, Json][] {
  return Object.entries(document.paths as Json).flatMap(([path, item]) =>
    Object.entries(item as Json).map(([method, op]): [string, string, Json] => [path, method, op as Json]),
  );
}

/** CONTRACT §3 and §4, as path (OpenAPI spelling) and method. */
const contractOperations: [string, string][] = [
  ["/api/v2/ws-token", "post"],
  ["/api/v2/ws-token", "get"],
  ["/ws/chat", "get"],
  ["/api/v1/chats", "post"],
  ["/api/v1/chats", "get"],
  ["/api/v1/chats/{id}/messages", "get"],
  ["/api/v1/chats/{id}/messages", "post"],
  ["/api/v1/messages/{id}", "patch"],
  ["/api/v1/messages/{id}", "delete"],
  ["/api/v1/chats/{id}/read", "post"],
  ["/api/v1/chats/unread", "get"],
  ["/api/v1/events", "get"],
  // CONTRACT §8: the archive (the only public routes §8 adds).
  ["/api/v1/chats/{id}/archive", "post"],
  ["/api/v1/chats/{id}/archive", "delete"],
  // CONTRACT §10.
  ["/api/v1/users/{id}/block", "post"],
  ["/api/v1/users/{id}/block", "delete"],
  ["/api/v1/blocks", "get"],
  ["/api/v1/reports", "post"],
  // CONTRACT §11.
  ["/api/v1/uploads", "post"],
  ["/api/v1/attachments/{id}", "get"],
  ["/health", "get"],
  ["/ready", "get"],
];

const queryParam = (op: Json, name: string): Json => {
  const param = (op.parameters as Json[]).find((p) => p.in === "query" && p.name === name);
  expect(param, `query parameter ${name}`).toBeDefined();
  return param as Json;
};

describe("OpenAPI document of the gateway", () => {
  it("has the shape of an OpenAPI 3.1 document", () => {
    const d = doc(false);
    expect(d.openapi).toMatch(/^3\.1\.\d+$/);
    expect(d.info.title).toEqual(expect.any(String));
    expect(d.info.title.length).toBeGreaterThan(0);
    expect(d.info.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(typeof d.paths).toBe("object");
    for (const path of Object.keys(d.paths)) expect(path.startsWith("/")).toBe(true);
  });

  it.each([false, true])("passes @apidevtools/swagger-parser validation (devAuth %s)", async (devAuth) => {
    // validate() dereferences in place: give it a copy.
    const validated = (await SwaggerParser.validate(structuredClone(doc(devAuth)) as any)) as Json;
    expect(validated.openapi).toBe("3.1.0");
  });

  it("the validator does reject a broken document (so the check above means something)", async () => {
    const broken = structuredClone(doc(false));
    delete broken.paths["/health"].get.responses["200"].description; // required in a Response Object
    await expect(SwaggerParser.validate(broken as any)).rejects.toThrow();
    const dangling = structuredClone(doc(false));
    dangling.paths["/health"].get.responses["200"].content["application/json"].schema = {
      $ref: "#/components/schemas/NoSuchSchema",
    };
    await expect(SwaggerParser.validate(dangling as any)).rejects.toThrow();
  });

  it.each([false, true])("has every path and method of CONTRACT §3 and §4 (devAuth %s)", (devAuth) => {
    const d = doc(devAuth);
    for (const [path, method] of contractOperations) {
      expect(d.paths[path]?.[method], `${method.toUpperCase()} ${path}`).toBeDefined();
    }
    const ids = operations(d).map(([, , op]) => op.operationId);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("has POST /api/dev/token only with devAuth", () => {
    expect(doc(false).paths["/api/dev/token"]).toBeUndefined();

    const withDev = doc(true);
    const devToken = withDev.paths["/api/dev/token"]?.post;
    expect(devToken).toBeDefined();
    expect(devToken.security).toEqual([]);
    const body = deref(withDev, devToken.requestBody.content["application/json"].schema);
    expect(body.required).toEqual(["user_id"]);
    expect(body.properties.user_id.type).toBe("integer");
    const answer = deref(withDev, devToken.responses["200"].content["application/json"].schema);
    expect(answer.required).toEqual(["access_token"]);
    expect(devToken.responses["400"].content["application/json"].schema).toEqual({
      $ref: "#/components/schemas/ErrorBody",
    });
  });

  it("documents a dev-token body that accepts exactly what the gateway's validator (dev-token.ts) accepts", () => {
    for (const body of [
      { user_id: 5 },
      { user_id: Number.MAX_SAFE_INTEGER },
      { user_id: Number.MAX_SAFE_INTEGER + 1 },
      { user_id: 0 },
      { user_id: -1 },
      { user_id: 1.5 },
      { user_id: "5" },
      {},
    ]) {
      expect(devTokenRequestSchema.safeParse(body).success, JSON.stringify(body)).toBe(
        devTokenBody.safeParse(body).success,
      );
    }
    expect(devTokenBody.safeParse({ user_id: 5 }).success).toBe(true);
    expect(devTokenBody.safeParse({ user_id: 0 }).success).toBe(false);
  });

  it("POST /api/v1/chats/{id}/messages: text of at most 4000 code points, not only white space, or photos with a caption", () => {
    const d = doc(false);
    const op = d.paths["/api/v1/chats/{id}/messages"].post;
    expect(op.requestBody.required).toBe(true);
    const body = deref(d, op.requestBody.content["application/json"].schema);
    // Two alternatives (CONTRACT §8, §11): a text send, or a send with photos whose caption may be empty.
    const [text, photos] = (body.anyOf as Json[]).map((alternative) => deref(d, alternative)) as [Json, Json];
    expect(text.type).toBe("object");
    expect(text.required).toEqual(["content"]);
    const content = text.properties.content;
    expect(content.type).toBe("string");
    expect(content.maxLength).toBe(4000);
    expect(content.maxLength).toBe(Limits.maxContentChars);
    expect(content.minLength).toBe(1);
    expect(text.properties.client_msg_id).toMatchObject({ type: "string", minLength: 1, maxLength: 64 });
    expect(photos.required).toEqual(["content", "attachments"]);
    expect(photos.properties.content).toMatchObject({ type: "string", maxLength: Limits.maxContentChars });
    expect(photos.properties.content.minLength).toBeUndefined();
    expect(photos.properties.attachments).toMatchObject({ type: "array", minItems: 1, maxItems: 10 });

    // The documented keywords say what the validator the chat service uses actually does.
    const notBlank = new RegExp(content.pattern, "u");
    const cases: [string, boolean][] = [
      ["hello", true],
      ["a".repeat(4000), true],
      ["😀".repeat(4000), true], // 8000 UTF-16 units, 4000 code points: JSON Schema counts code points too
      ["a".repeat(4001), false],
      ["", false],
      [" \t\n\u00a0", false],
    ];
    for (const [value, accepted] of cases) {
      expect(sendMessageBody.safeParse({ content: value }).success, JSON.stringify(value.slice(0, 8))).toBe(accepted);
      const documented = [...value].length >= content.minLength && [...value].length <= content.maxLength;
      expect(documented && notBlank.test(value), JSON.stringify(value.slice(0, 8))).toBe(accepted);
      // Beside a photo, only the length counts.
      const caption = [...value].length <= photos.properties.content.maxLength;
      expect(sendMessageBody.safeParse({ content: value, attachments: ["u1"] }).success).toBe(caption);
    }
    expect(sendMessageBody.safeParse({ content: "", attachments: [] }).success).toBe(false);
    expect(sendMessageBody.safeParse({ content: "", attachments: Array(11).fill("u") }).success).toBe(false);
  });

  it("POST /api/v1/reports documents what its validator (reportBody) accepts: one target, a bounded note", () => {
    const d = doc(false);
    const op = d.paths["/api/v1/reports"].post;
    const body = deref(d, op.requestBody.content["application/json"].schema);
    expect(body.required).toEqual(["reason"]);
    expect(body.properties.reason.enum).toEqual(["spam", "scam", "harassment", "inappropriate", "other"]);
    expect(body.properties.note.type).toEqual(["string", "null"]);
    const noteLimit = body.properties.note.maxLength;
    expect(noteLimit).toBe(Limits.reportNoteChars);
    const targets = ["message_id", "chat_id", "user_id"];
    /** What the document says of a body: one target exactly (oneOf), a known reason, a note not too long. */
    const documented = (b: Json) =>
      (body.oneOf as Json[]).filter((one) => (one.required as string[]).every((k) => k in b)).length === 1 &&
      body.properties.reason.enum.includes(b.reason) &&
      (b.note === undefined || b.note === null || [...b.note].length <= noteLimit) &&
      targets.every((k) => b[k] === undefined || (Number.isInteger(b[k]) && b[k] > 0));
    for (const b of [
      { reason: "spam", chat_id: 1 },
      { reason: "scam", message_id: 2, note: "é".repeat(Limits.reportNoteChars) },
      { reason: "other", user_id: 3, note: null },
      { reason: "spam" },
      { reason: "spam", chat_id: 1, user_id: 3 },
      { reason: "spam", message_id: 1, chat_id: 1, user_id: 3 },
      { reason: "boring", chat_id: 1 },
      { reason: "spam", chat_id: 0 },
      { reason: "spam", chat_id: 1, note: "x".repeat(Limits.reportNoteChars + 1) },
    ]) {
      expect(documented(b), JSON.stringify(b).slice(0, 80)).toBe(reportBody.safeParse(b).success);
    }
    // The report's own answers, and the gateway's on the way: a cookie change from elsewhere, a body too big or
    // too slow, too many requests in flight, the key set unreadable.
    expect(Object.keys(op.responses).sort()).toEqual([
      "200",
      "201",
      "400",
      "401",
      "403",
      "404",
      "408",
      "413",
      "429",
      "502",
      "503",
      "504",
    ]);
  });

  it("PATCH /api/v1/messages/{id} documents the same content constraint", () => {
    const d = doc(false);
    const body = deref(d, d.paths["/api/v1/messages/{id}"].patch.requestBody.content["application/json"].schema);
    expect(body.required).toEqual(["content"]);
    expect(body.properties.content.maxLength).toBe(Limits.maxContentChars);
  });

  it('every 401 answer has the {"error": {"code", "message"}} body', () => {
    const d = doc(true);
    const errorBody = d.components.schemas.ErrorBody;
    expect(errorBody.required).toEqual(["error"]);
    expect(errorBody.properties.error.required).toEqual(["code", "message"]);
    expect(errorBody.properties.error.properties.code.type).toBe("string");
    expect(errorBody.properties.error.properties.message.type).toBe("string");

    const with401 = operations(d).filter(([, , op]) => op.responses["401"]);
    // ws-token (2), the upgrade, and every forwarded /api/v1 operation.
    expect(with401.map(([path, method]) => `${method} ${path}`).sort()).toEqual(
      contractOperations
        .filter(([path]) => path !== "/health" && path !== "/ready")
        .map(([path, method]) => `${method} ${path}`)
        .sort(),
    );
    for (const [path, method, op] of with401) {
      expect(op.responses["401"].content["application/json"].schema, `${method} ${path}`).toEqual({
        $ref: "#/components/schemas/ErrorBody",
      });
    }
    // Every other error answer too.
    for (const [path, method, op] of operations(d)) {
      for (const [status, answer] of Object.entries(op.responses as Json)) {
        if (Number(status) < 400) continue;
        expect(answer.content["application/json"].schema, `${method} ${path} ${status}`).toEqual({
          $ref: "#/components/schemas/ErrorBody",
        });
      }
    }
  });

  it("declares the bearer and the access_token cookie schemes, and which operations need them", () => {
    const d = doc(false);
    expect(d.components.securitySchemes.bearerAuth).toMatchObject({ type: "http", scheme: "bearer" });
    expect(d.components.securitySchemes.cookieAuth).toEqual(
      expect.objectContaining({ type: "apiKey", in: "cookie", name: "access_token" }),
    );
    const either = [{ bearerAuth: [] }, { cookieAuth: [] }];
    for (const [path, method, op] of operations(d)) {
      const needsAccessToken = path.startsWith("/api/v1/") || path === "/api/v2/ws-token";
      expect(op.security, `${method} ${path}`).toEqual(needsAccessToken ? either : []);
    }
  });

  it("documents GET /ws/chat as an upgrade with token and after, answering 101/401/429/503", () => {
    const d = doc(false);
    const op = d.paths["/ws/chat"].get;
    expect(queryParam(op, "token")).toMatchObject({ required: true, schema: { type: "string" } });
    expect(queryParam(op, "after")).toMatchObject({ required: false, schema: { type: "integer", minimum: 0 } });
    // 400: a bad `after` (services/gateway/src/proxy/ws-upgrade.ts refuses it before the upgrade).
    expect(Object.keys(op.responses).sort()).toEqual(["101", "400", "401", "429", "503"]);
    // The frames themselves: the AsyncAPI document beside this one.
    expect(op.description).toContain("AsyncAPI 3 document at `GET /api/docs/websocket`");
  });

  it("documents ws-token answers with Cache-Control: no-store", () => {
    const d = doc(false);
    for (const method of ["get", "post"]) {
      const ok = d.paths["/api/v2/ws-token"][method].responses["200"];
      expect(ok.headers["Cache-Control"].schema).toEqual({ type: "string", enum: ["no-store"] });
      expect(deref(d, ok.content["application/json"].schema).required).toEqual(["token", "expires_in", "ws_url"]);
    }
  });

  it("documents the query parameters with their defaults and maxima", () => {
    const d = doc(false);
    const messages = d.paths["/api/v1/chats/{id}/messages"].get;
    expect(queryParam(messages, "before")).toMatchObject({ required: false, schema: { type: "integer" } });
    expect(queryParam(messages, "limit")).toMatchObject({
      required: false,
      schema: { type: "integer", minimum: 1, default: 20, maximum: 100 },
    });
    expect(messages.parameters.find((p: Json) => p.in === "path")).toMatchObject({ name: "id", required: true });

    const events = d.paths["/api/v1/events"].get;
    expect(queryParam(events, "after")).toMatchObject({ required: false, schema: { type: "integer", minimum: 0 } });
    expect(queryParam(events, "limit")).toMatchObject({ schema: { default: 100, maximum: 500 } });

    const chats = d.paths["/api/v1/chats"].get;
    expect(queryParam(chats, "limit")).toMatchObject({ schema: { default: 100, maximum: 500 } });
  });

  it("names the response schemas, with Message never null itself and last_message nullable", () => {
    const d = doc(false);
    const schemas = d.components.schemas;
    for (const name of [
      "Message",
      "Chat",
      "ChatSummary",
      "ChatEvent",
      "ErrorBody",
      "WsTokenResponse",
      "Unread",
      "MessagesPage",
      "ChatsList",
      "EventsPage",
      "ReadResult",
    ]) {
      expect(schemas[name], name).toBeDefined();
    }
    expect(schemas.Message.type).toBe("object");
    expect(schemas.Message.required).toEqual([
      "id",
      "chat_id",
      "sender_id",
      "kind",
      "content",
      "data",
      "attachments",
      "client_msg_id",
      "created_at",
      "edited_at",
      "deleted_at",
      "deleted_by",
    ]);
    expect(schemas.ChatSummary.properties.last_message).toEqual({
      anyOf: [{ $ref: "#/components/schemas/Message" }, { type: "null" }],
    });
    expect(Object.keys(schemas.ChatEvent.discriminator.mapping).sort()).toEqual([
      "chat_created",
      "chat_updated",
      "message_deleted",
      "message_edited",
      "message_read",
      "new_message",
      "user_blocked",
      "user_unblocked",
    ]);
    const sendAnswers = d.paths["/api/v1/chats/{id}/messages"].post.responses;
    expect(sendAnswers["201"].content["application/json"].schema).toEqual({ $ref: "#/components/schemas/Message" });
    expect(sendAnswers["429"].headers["Retry-After"]).toBeDefined();
  });
});

describe("GET /api/docs", () => {
  it("answers 200 with the document as JSON", async () => {
    const res = await createDocsRoutes({ devAuth: false }).request("/api/docs");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await res.json()).toEqual(buildOpenApiDocument({ devAuth: false }));
  });

  it("serves the devAuth document when created with devAuth", async () => {
    const body = (await (await createDocsRoutes({ devAuth: true }).request("/api/docs")).json()) as Json;
    expect(body.paths["/api/dev/token"].post).toBeDefined();
  });

  it("answers nothing else", async () => {
    const res = await createDocsRoutes({ devAuth: false }).request("/api/docs/other");
    expect(res.status).toBe(404);
  });
});

/** A message as CONTRACT §8 shapes it, to be bent into what the document must refuse. */
const textMessage = {
  id: 7,
  chat_id: 3,
  sender_id: 12,
  kind: "text",
  content: "is it still available?",
  data: null,
  attachments: [],
  client_msg_id: "c-1",
  created_at: "2026-12-07T03:00:00.000Z",
  edited_at: null,
  deleted_at: null,
  deleted_by: null,
};
const systemMessage = {
  ...textMessage,
  id: 8,
  sender_id: null,
  kind: "system",
  content: "Item sold",
  data: { offer_id: 99, amount_minor: 1500 },
  client_msg_id: "platform-1",
};
const chat = {
  id: 3,
  listing_id: 42,
  buyer_id: 12,
  seller_id: 7,
  created_at: "2026-12-07T03:00:00.000Z",
  last_activity_at: "2026-12-07T03:00:00.000Z",
  listing: {
    id: 42,
    title: "Bike",
    price_minor: 15000,
    currency: "EUR",
    image_url: null,
    url: "https://example.com/l/42",
    status: "sold",
  },
  peer: { id: 7, display_name: "Sam", avatar_url: null },
  archived: false,
};

describe("the platform's voice (CONTRACT §8) in the document", () => {
  it("documents the message of §8: kind, data, attachments, deleted_by, and sender_id null for the platform", () => {
    const d = doc(false);
    const message = d.components.schemas.Message;
    expect(message.properties.sender_id.type).toEqual(["integer", "null"]);
    expect(message.properties.kind.enum).toEqual(["text", "system", "image"]);
    expect(message.properties.data.type).toEqual(["object", "null"]);
    expect(message.properties.attachments).toMatchObject({
      type: "array",
      items: { $ref: "#/components/schemas/Attachment" },
    });
    expect(message.properties.deleted_by.enum).toEqual(["sender", "platform", null]);
  });

  it("documents the chat of §8: listing (or null), peer and archived, in every answer and event that carries one", () => {
    const d = doc(false);
    const schemas = d.components.schemas;
    expect(schemas.Chat.required).toEqual(expect.arrayContaining(["listing", "peer", "archived"]));
    expect(schemas.Chat.properties.listing).toMatchObject({
      anyOf: [{ $ref: "#/components/schemas/ChatListing" }, { type: "null" }],
    });
    expect(schemas.Chat.properties.peer).toEqual({ $ref: "#/components/schemas/ChatPeer" });
    expect(schemas.Chat.properties.archived.type).toBe("boolean");
    expect(schemas.ChatListing.required).toEqual([
      "id",
      "title",
      "price_minor",
      "currency",
      "image_url",
      "url",
      "status",
    ]);
    expect(schemas.ChatListing.properties.status.enum).toEqual(["active", "reserved", "sold", "removed"]);
    expect(schemas.ChatPeer.required).toEqual(["id", "display_name", "avatar_url"]);
    // The list's items, the open's answers and both events that carry a chat all have these fields.
    expect(schemas.ChatSummary.required).toEqual(expect.arrayContaining(["listing", "peer", "archived"]));
    const open = d.paths["/api/v1/chats"].post.responses;
    for (const status of ["200", "201"]) {
      expect(open[status].content["application/json"].schema).toEqual({ $ref: "#/components/schemas/Chat" });
    }
    expect(schemas.ChatCreatedEvent.properties.chat).toEqual({ $ref: "#/components/schemas/Chat" });
    expect(schemas.ChatUpdatedEvent.properties.chat).toEqual({ $ref: "#/components/schemas/Chat" });
    expect(schemas.ChatUpdatedEvent.properties.type.enum).toEqual(["chat_updated"]);
    expect(schemas.ChatEvent.discriminator.mapping.chat_updated).toBe("#/components/schemas/ChatUpdatedEvent");
  });

  it("documents the archive: POST and DELETE /api/v1/chats/{id}/archive (204, 404) and GET /api/v1/chats?archived=1", () => {
    const d = doc(false);
    for (const method of ["post", "delete"]) {
      const op = d.paths["/api/v1/chats/{id}/archive"][method];
      expect(op.requestBody, method).toBeUndefined();
      expect(op.parameters.find((p: Json) => p.in === "path")).toMatchObject({ name: "id", required: true });
      expect(op.responses["204"].content, method).toBeUndefined();
      expect(Object.keys(op.responses).sort(), method).toEqual([
        "204",
        "400",
        "401",
        "403",
        "404",
        "429",
        "502",
        "503",
        "504",
      ]);
      expect(op.description).toContain("chat_updated");
    }
    const archived = queryParam(d.paths["/api/v1/chats"].get, "archived");
    expect(archived.required).toBe(false);
    expect(archived.schema.enum).toContain("1");
  });

  it("names each refusal §8 adds, on the route and status that answers it", () => {
    const d = doc(false);
    const description = (path: string, method: string, status: number) =>
      String(d.paths[path][method].responses[String(status)]?.description);
    const refusals: [string, string, number, string][] = [
      ["/api/v1/chats/{id}/messages", "post", 403, "`user_suspended`"],
      ["/api/v1/messages/{id}", "patch", 403, "`user_suspended`"],
      ["/api/v1/chats", "post", 403, "`user_suspended`"],
      ["/api/v1/chats/{id}/messages", "post", 409, "`listing_closed`"],
      ["/api/v1/chats", "post", 409, "`listing_closed`"],
      ["/api/v1/chats", "post", 404, "`listing_not_found`"],
      ["/api/v1/messages/{id}", "patch", 403, "system message (`forbidden`)"],
      ["/api/v1/messages/{id}", "delete", 403, "system message (`forbidden`)"],
    ];
    for (const [path, method, status, words] of refusals) {
      expect(description(path, method, status), `${method} ${path} ${status}`).toContain(words);
    }
    // Suspension leaves reads, mark-read and deleting one's own messages alone.
    for (const [path, method] of [
      ["/api/v1/chats", "get"],
      ["/api/v1/chats/{id}/messages", "get"],
      ["/api/v1/chats/{id}/read", "post"],
      ["/api/v1/events", "get"],
      ["/api/v1/messages/{id}", "delete"],
    ] as const) {
      expect(JSON.stringify(d.paths[path][method].responses), `${method} ${path}`).not.toContain("user_suspended");
    }
  });

  it.each([false, true])(
    "has no /internal route: the platform's API is not reachable through the gateway (devAuth %s)",
    (devAuth) => {
      const d = doc(devAuth);
      const paths = Object.keys(d.paths);
      expect(paths.filter((p) => p.toLowerCase().includes("internal"))).toEqual([]);
      expect(JSON.stringify(d.components.securitySchemes)).not.toMatch(/internal/i);
      expect(d.info.description).toContain("`/internal/…` always answers 404");
    },
  );
});

describe("the answer checker (support/openapi-answers.ts) against the document", () => {
  const check = answerChecker(doc(false));
  const messages = "/api/v1/chats/{id}/messages";

  it("accepts the shapes of CONTRACT §8: a person's message, a system message, one the platform deleted, a chat", () => {
    expect(check.problems(messages, "post", 201, textMessage)).toEqual([]);
    expect(check.problems(messages, "get", 200, { messages: [systemMessage, textMessage], has_more: false })).toEqual(
      [],
    );
    const deleted = { ...textMessage, content: "", deleted_at: "2026-12-07T03:01:00Z", deleted_by: "platform" };
    expect(check.problems("/api/v1/messages/{id}", "delete", 200, deleted)).toEqual([]);
    expect(check.problems("/api/v1/chats", "post", 201, chat)).toEqual([]);
    expect(check.problems("/api/v1/chats", "post", 200, { ...chat, listing: null })).toEqual([]);
    expect(check.problems("/api/v1/chats/{id}/archive", "post", 204, undefined)).toEqual([]);
    expect(
      check.problems("/api/v1/events", "get", 200, {
        events: [
          { type: "chat_updated", event_id: 4, chat: { ...chat, archived: true } },
          { type: "new_message", event_id: 5, chat_id: 3, message: systemMessage },
        ],
        last_event_id: 5,
        has_more: false,
      }),
    ).toEqual([]);
    expect(
      check.problems(messages, "post", 403, { error: { code: "user_suspended", message: "suspended until …" } }),
    ).toEqual([]);
  });

  it("refuses what the document does not allow (so that a pass means something)", () => {
    const { kind: _kind, ...noKind } = textMessage;
    const { peer: _peer, ...noPeer } = chat;
    const cases: [string, string, number, unknown, RegExp][] = [
      [messages, "post", 201, noKind, /must have required property 'kind'/],
      [messages, "post", 201, { ...textMessage, kind: "robot" }, /kind must be equal to one of the allowed values/],
      [messages, "post", 201, { ...textMessage, attachments: null }, /attachments must be array/],
      [messages, "post", 201, { ...textMessage, deleted_by: "moderator" }, /deleted_by must be equal to one of/],
      [messages, "post", 201, { ...textMessage, data: "offer" }, /data must be object,null/],
      [messages, "post", 201, { ...textMessage, created_at: "yesterday" }, /created_at must match format "date-time"/],
      ["/api/v1/chats", "post", 201, noPeer, /must have required property 'peer'/],
      ["/api/v1/chats", "post", 201, { ...chat, archived: "no" }, /archived must be boolean/],
      ["/api/v1/chats", "post", 201, { ...chat, listing: { ...chat.listing, status: "gone" } }, /status must be/],
      [
        "/api/v1/events",
        "get",
        200,
        { events: [{ type: "chat_updated", event_id: 4, chat: noPeer }], last_event_id: 4, has_more: false },
        /required property 'peer'/,
      ],
      ["/api/v1/chats/{id}/archive", "post", 200, chat, /status not documented/],
      ["/api/v1/chats/{id}/archive", "post", 204, chat, /the document says no body/],
      [messages, "post", 418, { error: { code: "teapot", message: "x" } }, /status not documented/],
      [messages, "post", 403, { error: { code: "suspended", message: "x" } }, /the code `suspended` is not named/],
      [messages, "post", 403, { error: { code: "user_suspended" } }, /must have required property 'message'/],
      ["/internal/chat/users/{id}/suspend", "post", 204, undefined, /is not in the document/],
    ];
    for (const [path, method, status, body, problem] of cases) {
      const found = check.problems(path, method, status, body);
      expect(found.join("\n"), `${method} ${path} ${status} ${String(JSON.stringify(body)).slice(0, 60)}`).toMatch(
        problem,
      );
    }
  });

  it("documents the gateway's own answers on every operation they apply to, and where it is served", () => {
    const d = doc(false);
    expect(d.servers).toEqual([{ url: "/", description: "this gateway" }]);
    expect(buildOpenApiDocument({ devAuth: false, basePath: "/chat" })).toMatchObject({ servers: [{ url: "/chat" }] });
    for (const [path, item] of Object.entries(d.paths as Record<string, Record<string, Json>>)) {
      for (const [method, op] of Object.entries(item)) {
        if (!op.security?.length) continue;
        const where = `${method.toUpperCase()} ${path}`;
        expect(op.responses["503"]?.description, where).toContain("key_set_unavailable");
        if (method !== "get") expect(op.responses["403"]?.description, where).toContain("`access_token` cookie");
        if (!path.startsWith("/api/v1/")) continue;
        expect(op.responses["429"]?.headers?.["Retry-After"], where).toBeDefined();
        if (op.requestBody) {
          expect(op.responses["413"]?.description, where).toContain("payload_too_large");
          expect(op.responses["408"]?.description, where).toContain("request_timeout");
        }
      }
    }
    // An answer the operation documented itself keeps its own words, then the gateway's.
    const send = d.paths["/api/v1/chats/{id}/messages"].post;
    expect(send.responses["429"].description).toMatch(/^too many messages \(`rate_limited`\); or too many requests/);
    expect(send.responses["403"].description).toMatch(/blocked.*; or authenticated by the `access_token` cookie/);
  });
});
