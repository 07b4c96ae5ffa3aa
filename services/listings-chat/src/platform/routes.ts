import { ErrorCode } from "@listings-chat/shared";
import { Hono } from "hono";
import { z } from "zod";
import type { Database } from "../db/client.ts";
import { listingStatuses } from "../db/schema.ts";
import { ChatError, storing } from "../errors.ts";
import { jsonBody, positiveInt } from "../http/validation.ts";
import { putListing } from "./listings.ts";

/** The longest listing title, in characters (code points): marketplaces cap theirs at 70–100; room to spare. */
export const LISTING_TITLE_MAX_CHARS = 200;
/** The longest `url` or `image_url`: what browsers and CDNs reliably carry. */
export const LISTING_URL_MAX_CHARS = 2048;

/** No NUL (PostgreSQL cannot store it) and no half of a surrogate pair (UTF-8 cannot encode it). */
const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const storable = (s: string) => !s.includes("\u0000") && !loneSurrogate.test(s);

const isHttpUrl = (value: string) => {
  try {
    const { protocol } = new URL(value);
    return protocol === "http:" || protocol === "https:";
  } catch {
    return false;
  }
};

const httpUrl = z
  .string()
  .max(LISTING_URL_MAX_CHARS, `must be at most ${LISTING_URL_MAX_CHARS} characters`)
  .refine(isHttpUrl, "must be an absolute http:// or https:// URL");

/** The body of `PUT /internal/chat/listings/:id` (CONTRACT §8). Unknown fields are ignored. */
export const putListingBody = z.object({
  seller_id: z.number().int().positive(),
  title: z
    .string()
    .refine((s) => s.trim().length > 0, "must not be empty")
    .refine(storable, "must not contain NUL characters or unpaired surrogates")
    .refine((s) => [...s].length <= LISTING_TITLE_MAX_CHARS, `must be at most ${LISTING_TITLE_MAX_CHARS} characters`),
  // Minor units (cents) as a whole number, as the platform's payment side counts them: no float rounding.
  price_minor: z.number().int().nonnegative(),
  currency: z.string().regex(/^[A-Z]{3}$/, "must be an ISO 4217 code: three upper-case letters (EUR, USD)"),
  // A listing may have no photo: null or absent.
  image_url: httpUrl.nullish().transform((url) => url ?? null),
  url: httpUrl,
  status: z.enum(listingStatuses, { error: `must be one of ${listingStatuses.join(", ")}` }),
});

export interface PlatformDeps {
  db: Database;
}

/** The platform's voice (CONTRACT §8): the monolith's /internal routes, behind the internal token. */
export function createPlatformRoutes({ db }: PlatformDeps) {
  const platform = new Hono();

  // Upsert: 200 the listing whether it was created, changed or the same again (a retry is harmless).
  platform.put("/internal/chat/listings/:id", async (c) => {
    const id = positiveInt("listing id", c.req.param("id"));
    const body = await jsonBody(c, putListingBody);
    const outcome = await storing(() => putListing(db, id, body));
    if (outcome.status === "seller_mismatch") {
      throw new ChatError(
        ErrorCode.sellerMismatch,
        409,
        `listing ${id} already has chats with another seller than ${body.seller_id}: a listing keeps the seller its chats were opened with`,
      );
    }
    return c.json(outcome.listing, 200);
  });

  return platform;
}
