import { reportBody } from "@listings-chat/shared";
import { Hono } from "hono";
import type { ApiEnv } from "../http/api-routes.ts";
import { jsonBody, positiveInt } from "../http/validation.ts";
import type { SafetyService } from "./service.ts";

/** Blocks and reports (CONTRACT §10), under `/api/v1` behind the API's user check. */
export function createSafetyRoutes(safety: SafetyService) {
  const routes = new Hono<ApiEnv>();

  routes.post("/users/:id/block", async (c) => {
    await safety.block(c.get("userId"), positiveInt("user id", c.req.param("id")));
    return c.body(null, 204);
  });

  routes.delete("/users/:id/block", async (c) => {
    await safety.unblock(c.get("userId"), positiveInt("user id", c.req.param("id")));
    return c.body(null, 204);
  });

  routes.get("/blocks", async (c) => c.json(await safety.blocks(c.get("userId"))));

  routes.post("/reports", async (c) => {
    const body = await jsonBody(c, reportBody);
    const { id, created } = await safety.report(c.get("userId"), body);
    return c.json({ id }, created ? 201 : 200);
  });

  return routes;
}
