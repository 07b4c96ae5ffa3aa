import { Hono } from "hono";
import type { Logger } from "pino";
import type { Database } from "../db/client.ts";
import { positiveInt } from "../http/validation.ts";
import { exportPerson } from "./export.ts";

export interface PersonalDataRoutesDeps {
  /** The pool of page reads: an export is a long read, never in the way of the writes. */
  reads: Database;
  /** Records an erasure (idempotent) and starts working it; resolves once it is stored. */
  requestErasure: (userId: number) => Promise<void>;
  /** Where an export that fails mid-stream is told of: its answer went out as 200, its body is cut short. */
  log: Logger;
}

/** A person's data (CONTRACT §12): the monolith's answer to an access request and to an erasure request. */
export function createPersonalDataRoutes({ reads, requestErasure, log }: PersonalDataRoutesDeps) {
  const routes = new Hono();

  // JSON lines, read a page at a time as the receiver takes them: a person with 100,000 chats is never in memory.
  routes.get("/internal/chat/users/:id/export", (c) => {
    const userId = positiveInt("user id", c.req.param("id"));
    return new Response(exportPerson(reads, userId, log), {
      status: 200,
      headers: { "content-type": "application/x-ndjson; charset=utf-8", "cache-control": "no-store" },
    });
  });

  // 202 once the request is stored: the erasure goes on in batches, on any instance, and ends with `user.erased`.
  routes.delete("/internal/chat/users/:id", async (c) => {
    await requestErasure(positiveInt("user id", c.req.param("id")));
    return c.body(null, 202);
  });

  return routes;
}
