import type { Database } from "../db/client.ts";
import { countDeliveries, type WebhookCounts } from "./outbox.ts";

/** How long one count of the queue answers stats and scrapes: counting a big backlog is not free. */
export const WEBHOOK_COUNTS_CACHE_MS = 5_000;

/**
 * The queue's counts for `/internal/chat/ws/stats` and the gauges, read at most every `cacheMs` (concurrent
 * askers share one query). A failed read answers the last counts, or throws when there are none yet.
 */
export function createWebhookCounts(db: Database, cacheMs = WEBHOOK_COUNTS_CACHE_MS): () => Promise<WebhookCounts> {
  let last: { at: number; counts: WebhookCounts } | undefined;
  let reading: Promise<WebhookCounts> | undefined;
  return () => {
    if (last && Date.now() - last.at < cacheMs) return Promise.resolve(last.counts);
    reading ??= countDeliveries(db)
      .then((counts) => {
        last = { at: Date.now(), counts };
        return counts;
      })
      .catch((error: unknown) => {
        if (last) return last.counts;
        throw error;
      })
      .finally(() => {
        reading = undefined;
      });
    return reading;
  };
}
