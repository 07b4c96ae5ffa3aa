import { Hono } from "hono";
import { z } from "zod";
import type { Database } from "../db/client.ts";
import { optionalJsonBody, pageLimit } from "../http/validation.ts";
import { listDead, requeueDead, rowIdOf } from "./outbox.ts";

/** The most dead deliveries one list answers, and one retry names. */
export const DEAD_LIST_MAX = 1_000;

/** Of `POST /internal/chat/webhooks/dead/retry`: the dead deliveries to send again; none named: all of them. */
const retryBody = z.object({
  webhook_ids: z
    .array(z.string().refine((id) => rowIdOf(id) !== undefined, "must be a webhook-id as listed (msg_ and a number)"))
    .min(1)
    .max(DEAD_LIST_MAX)
    .optional(),
});

/** The dead deliveries (CONTRACT §9), behind the internal token like the platform's other routes. */
export function createWebhookRoutes(db: Database) {
  const routes = new Hono();
  routes.get("/internal/chat/webhooks/dead", async (c) => {
    return c.json({ deliveries: await listDead(db, pageLimit(c.req.query("limit"), 100, DEAD_LIST_MAX)) });
  });
  routes.post("/internal/chat/webhooks/dead/retry", async (c) => {
    const { webhook_ids } = await optionalJsonBody(c, retryBody);
    return c.json({
      requeued: await requeueDead(
        db,
        webhook_ids?.map((id) => rowIdOf(id) as number),
      ),
    });
  });
  return routes;
}
