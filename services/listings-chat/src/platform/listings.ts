import type { ChatListing } from "@listings-chat/shared";
import { sql } from "drizzle-orm";
import type { Database } from "../db/client.ts";
import { executeWrite } from "../db/retry.ts";
import { rowsOf } from "../events/log.ts";

/**
 * A listing as the platform registered it, as `PUT /internal/chat/listings/:id` answers it: what chats show of
 * it, with the platform's bookkeeping.
 */
export interface Listing extends ChatListing {
  seller_id: number;
  created_at: string;
  updated_at: string;
}

export type ListingFields = Omit<Listing, "id" | "created_at" | "updated_at">;

/**
 * What a PUT did: `created`, `updated`, `unchanged` (the same fields again: nothing written), or
 * `seller_mismatch` (a chat on the listing has another seller: nothing stored).
 */
export type PutListingOutcome =
  | { status: "created" | "updated" | "unchanged"; listing: Listing }
  | { status: "seller_mismatch" };

interface PutRow {
  status: PutListingOutcome["status"];
  listing: Listing | null;
}

/** Registers or changes the listing `id` in one statement (`lc_put_listing`, under the listing's lock). */
export async function putListing(db: Database, id: number, fields: ListingFields): Promise<PutListingOutcome> {
  const rows = rowsOf<PutRow>(
    await executeWrite(
      db,
      sql`select * from lc_put_listing(${id}, ${fields.seller_id}, ${fields.title}, ${fields.price_minor},
            ${fields.currency}, ${fields.image_url}, ${fields.url}, ${fields.status})`,
    ),
  );
  const first = rows[0];
  if (!first) throw new Error("lc_put_listing returned no row");
  if (first.status === "seller_mismatch") return { status: "seller_mismatch" };
  if (!first.listing) throw new Error(`lc_put_listing answered ${first.status} without the listing`);
  return { status: first.status, listing: first.listing };
}
