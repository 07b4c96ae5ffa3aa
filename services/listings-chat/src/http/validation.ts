import { ErrorCode } from "@listings-chat/shared";
import type { Context } from "hono";
import type { z } from "zod";
import { ChatError } from "../errors.ts";

const invalid = (error: z.ZodError) => {
  const issue = error.issues[0];
  const where = issue?.path.join(".") || "body";
  return new ChatError(ErrorCode.validationFailed, 400, `${where}: ${issue?.message ?? "invalid"}`);
};

/** The JSON body checked against `schema`, or a 400 that says what is wrong. */
export async function jsonBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw badJson();
  }
  return checked(schema, body);
}

/** As `jsonBody`, for a body the caller may leave out (a DELETE, a suspension until lifted): none is `{}`. */
export async function optionalJsonBody<S extends z.ZodType>(c: Context, schema: S): Promise<z.infer<S>> {
  const text = await c.req.text();
  if (text.trim() === "") return checked(schema, {});
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw badJson();
  }
  return checked(schema, body);
}

const badJson = () =>
  new ChatError(ErrorCode.badJson, 400, "the body is not valid JSON: send Content-Type application/json");

function checked<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const result = schema.safeParse(body);
  if (!result.success) throw invalid(result.error);
  return result.data;
}

/** A positive integer from a path or query parameter; a clear 400 otherwise. */
export function positiveInt(name: string, raw: string | undefined): number {
  if (raw === undefined || !/^[1-9]\d{0,15}$/.test(raw)) {
    throw new ChatError(ErrorCode.validationFailed, 400, `${name} must be a positive integer`);
  }
  return Number(raw);
}

/** An optional query parameter: absent → undefined, otherwise an integer ≥ `min`. */
export function optionalInt(name: string, raw: string | undefined, min: number): number | undefined {
  if (raw === undefined || raw === "") return undefined;
  if (!/^\d{1,16}$/.test(raw) || Number(raw) < min) {
    throw new ChatError(ErrorCode.validationFailed, 400, `${name} must be an integer of at least ${min}`);
  }
  return Number(raw);
}

/** `limit`: the default when absent, at most `max` (larger values are lowered to it). */
export function pageLimit(raw: string | undefined, fallback: number, max: number): number {
  return Math.min(optionalInt("limit", raw, 1) ?? fallback, max);
}

/** A query flag: absent, `0` or `false` → false; `1` or `true` → true; anything else a clear 400. */
export function flag(name: string, raw: string | undefined): boolean {
  if (raw === undefined || raw === "" || raw === "0" || raw === "false") return false;
  if (raw === "1" || raw === "true") return true;
  throw new ChatError(ErrorCode.validationFailed, 400, `${name} must be 1 or 0 (or true or false)`);
}
