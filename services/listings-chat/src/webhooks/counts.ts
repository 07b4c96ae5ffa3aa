import type { Database } from "../db/client.ts";
import { countDeliveries, type WebhookCounts } from "./outbox.ts";

/** How long one count of the queue answers stats and scrapes: counting a big backlog is not free. */
export const WEBHOOK_COUNTS_CACHE_MS = 5_000;
/** How long an asker waits for a count before it takes the last one (or none): stats must answer during an outage. */
export const WEBHOOK_COUNTS_WAIT_MS = 1_000;

/**
 * The queue's counts for `/internal/chat/ws/stats` and the gauges, read at most every `cacheMs` (concurrent
 * askers share one query). A read that fails, or takes over `waitMs`, answers the last counts, or rejects when
 * there are none yet (the query goes on, and its answer is kept for the next asker).
 */
export function createWebhookCounts(
  db: Database,
  cacheMs = WEBHOOK_COUNTS_CACHE_MS,
  waitMs = WEBHOOK_COUNTS_WAIT_MS,
): () => Promise<WebhookCounts> {
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
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<WebhookCounts>((resolve, reject) => {
      timer = setTimeout(() => {
        if (last) resolve(last.counts);
        else reject(new Error(`the webhook counts took over ${waitMs} ms`));
      }, waitMs);
    });
    return Promise.race([reading, late]).finally(() => clearTimeout(timer));
  };
}
