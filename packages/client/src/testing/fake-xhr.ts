import type { XMLHttpRequestLike } from "../upload.ts";

/**
 * An XMLHttpRequest over a fake `fetch`, for uploads: the body's progress reported in quarters as it "goes
 * out" (before the fetch, which a test may hold), then the whole once the answer came. Callbacks arrive as
 * microtasks, like the fake server's, so fake timers decide nothing here. `withCredentials` is passed on as
 * fetch's `credentials`, so the server sees what a browser would send.
 */
export class FakeXMLHttpRequest implements XMLHttpRequestLike {
  withCredentials = false;
  status = 0;
  responseText = "";
  readonly upload: XMLHttpRequestLike["upload"] = { onprogress: null };
  onload: ((event: unknown) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  onabort: ((event: unknown) => void) | null = null;
  private method = "GET";
  private url = "";
  private readonly headers: Record<string, string> = {};
  private aborted = false;
  private readonly fetchImpl: typeof fetch;

  constructor(fetchImpl: typeof fetch) {
    this.fetchImpl = fetchImpl;
  }

  open(method: string, url: string): void {
    this.method = method;
    this.url = url;
  }

  setRequestHeader(name: string, value: string): void {
    this.headers[name.toLowerCase()] = value;
  }

  send(body: Blob): void {
    void this.run(body);
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    void Promise.resolve().then(() => this.onabort?.({}));
  }

  private async run(body: Blob): Promise<void> {
    for (const share of [0.25, 0.5, 0.75]) {
      await Promise.resolve();
      if (this.aborted) return;
      this.upload.onprogress?.({ loaded: Math.floor(body.size * share) });
    }
    let res: Response;
    try {
      res = await this.fetchImpl(this.url, {
        method: this.method,
        headers: this.headers,
        body,
        credentials: this.withCredentials ? "include" : "omit",
      });
    } catch {
      if (!this.aborted) this.onerror?.({});
      return;
    }
    const text = await res.text();
    if (this.aborted) return;
    this.upload.onprogress?.({ loaded: body.size });
    this.status = res.status;
    this.responseText = text;
    this.onload?.({});
  }
}
