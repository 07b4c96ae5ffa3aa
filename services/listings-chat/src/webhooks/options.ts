/** How this instance sends webhooks (CONTRACT §9; env.ts reads them). */
export interface WebhookOptions {
  /** WEBHOOK_URL: where every delivery is POSTed. */
  url: string;
  /** WEBHOOK_SECRET: `whsec_` and a base64 key (Standard Webhooks). */
  secret: string;
  /** WEBHOOK_TIMEOUT_MS: a 2xx must come within this, or the attempt failed. */
  timeoutMs: number;
  /** WEBHOOK_MAX_AGE_S: a delivery still failing this long after it was recorded (or retried by hand) is dead. */
  maxAgeS: number;
  /** NOTIFY_UNREAD_AFTER_S: how long a message stays unread before `notification.unread`. */
  notifyUnreadAfterS: number;
  /** WEBHOOK_CONCURRENCY: deliveries in flight at once on this instance. */
  concurrency: number;
  /** WEBHOOK_RETRY_MIN_MS and WEBHOOK_RETRY_MAX_MS: the first wait after a failure, and the longest. */
  retryMinMs: number;
  retryMaxMs: number;
  /** WEBHOOK_POLL_MS: how often an idle instance looks for due deliveries and due reminders. */
  pollMs: number;
  /** WEBHOOK_KEEP_DELIVERED_S: delivered rows are removed this long after their delivery. */
  keepDeliveredS: number;
  /**
   * WEBHOOK_YIELD_MAX_S: while the CPU is short, all but the unread reminders wait, at most this long before they
   * go anyway (yielding.ts); 0: they never wait.
   */
  yieldMaxS: number;
}

/** `whsec_` and a key of 24 to 64 bytes in base64, as Standard Webhooks' libraries generate and accept. */
export function isWebhookSecret(value: string): boolean {
  const match = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(value);
  if (!match) return false;
  const bytes = Buffer.from(match[1] as string, "base64").length;
  return bytes >= 24 && bytes <= 64;
}

/**
 * The wait before attempt `attempt + 1` after `attempt` failed ones: `minMs` doubled per failure up to `maxMs`,
 * then a random point between half of it and all of it, so that deliveries that failed together (a receiver
 * that was down) do not all come back in the same instant. With the defaults: about 5 s, 10 s, 20 s … 1 h.
 */
export function retryDelayMs(
  attempt: number,
  minMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(Math.max(attempt - 1, 0), 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * WEBHOOK_URL without its `user:password@`, and them as a Basic `authorization` header: undici, like fetch,
 * sends none of a URL's credentials, and a receiver behind basic auth would refuse every delivery.
 */
export function splitCredentials(url: string): { url: string; authorization?: string } {
  const parsed = new URL(url);
  if (!parsed.username && !parsed.password) return { url };
  const credentials = `${decodeURIComponent(parsed.username)}:${decodeURIComponent(parsed.password)}`;
  parsed.username = "";
  parsed.password = "";
  return { url: parsed.toString(), authorization: `Basic ${Buffer.from(credentials).toString("base64")}` };
}
