/**
 * URLs of photos for `<img src>` (CONTRACT §11): the gateway answers a short-lived signed URL per photo and
 * size. Each is kept until 80 % of its life is over, so that a thread drawn again (or the same photo in two
 * places) asks once, and an `<img>` never gets a URL about to expire; a request on its way is shared.
 */
import type { Attachment } from "./protocol/index.ts";
import type { ChatApi } from "./rest.ts";

/** The share of a link's life it is used for: the rest is margin for the image to load. */
const USABLE_SHARE = 0.8;
/** Past this many links kept, expired ones are dropped (a long thread of photos, scrolled through). */
const PRUNE_ABOVE = 200;

export class AttachmentUrls {
  private readonly api: ChatApi;
  private readonly now: () => number;
  private readonly links = new Map<string, { url: Promise<string>; until: number }>();

  constructor(api: ChatApi, now: () => number) {
    this.api = api;
    this.now = now;
  }

  get(attachment: Pick<Attachment, "id">, thumb: boolean): Promise<string> {
    const key = `${attachment.id}:${thumb ? "thumb" : "full"}`;
    const kept = this.links.get(key);
    if (kept && kept.until > this.now()) return kept.url;
    if (this.links.size > PRUNE_ABOVE) this.prune();
    // Until it answers, the request itself is shared.
    const entry = { until: Number.POSITIVE_INFINITY, url: Promise.resolve("") };
    entry.url = this.api.attachmentLink(attachment.id, { thumb }).then(
      (link) => {
        entry.until = this.now() + link.expires_in * 1000 * USABLE_SHARE;
        return this.api.gatewayUrl(link.url);
      },
      (error: unknown) => {
        // A failure is not kept: the next call asks again.
        if (this.links.get(key) === entry) this.links.delete(key);
        throw error;
      },
    );
    this.links.set(key, entry);
    return entry.url;
  }

  private prune(): void {
    const now = this.now();
    for (const [key, entry] of this.links) if (entry.until <= now) this.links.delete(key);
  }
}
