/**
 * One photo's bytes to storage (CONTRACT §11): a `PUT` to the URL the upload ticket names, with exactly its
 * headers and no credentials (the URL carries its own signature; an access token or cookie must never reach a
 * storage of another origin). XMLHttpRequest when there is one, for its upload progress (fetch reports none
 * for request bodies); `fetch` otherwise (Node, tests), which reports progress once the bytes are there.
 */
import { ChatApiError, sendAbortedError } from "./rest.ts";

/** The part of XMLHttpRequest an upload uses, so that tests and other environments can pass their own. */
export interface XMLHttpRequestLike {
  open(method: string, url: string): void;
  setRequestHeader(name: string, value: string): void;
  send(body: Blob): void;
  abort(): void;
  withCredentials: boolean;
  readonly status: number;
  readonly responseText: string;
  readonly upload: { onprogress: ((event: { loaded: number }) => void) | null };
  onload: ((event: unknown) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onabort: ((event: unknown) => void) | null;
}
export type XMLHttpRequestFactory = () => XMLHttpRequestLike;

export interface PutRequest {
  /** Resolved already: absolute, or relative to the page. */
  url: string;
  headers: Record<string, string>;
  body: Blob;
  /** Bytes of `body` sent so far. */
  onProgress(loaded: number): void;
  signal: AbortSignal;
}

export type PutBytes = (request: PutRequest) => Promise<void>;

/**
 * A storage's refusal: `upload_failed` whichever storage it is, with what it said: the development storage's
 * error body (JSON), or S3's XML `<Code>`/`<Message>` (an expired or altered presigned URL: 403 AccessDenied).
 */
function refusal(status: number, text: string): ChatApiError {
  let detail: string | undefined;
  try {
    detail = (JSON.parse(text) as { error?: { message?: string } }).error?.message;
  } catch {
    const xml = (tag: string) => new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(text)?.[1];
    detail = [xml("Code"), xml("Message")].filter(Boolean).join(": ");
  }
  return new ChatApiError(
    status,
    "upload_failed",
    `storage refused the photo (HTTP ${status}${detail ? `: ${detail}` : ""})`,
  );
}

const networkError = () => new ChatApiError(0, "upload_failed", "the photo could not reach storage (network error)");

/** The upload over XMLHttpRequest, with progress as the bytes go out. */
export function putWithXhr(create: XMLHttpRequestFactory): PutBytes {
  return ({ url, headers, body, onProgress, signal }) =>
    new Promise<void>((resolve, reject) => {
      const xhr = create();
      const abort = () => xhr.abort();
      const done = (error?: ChatApiError) => {
        signal.removeEventListener("abort", abort);
        if (error) reject(error);
        else resolve();
      };
      xhr.open("PUT", url);
      xhr.withCredentials = false;
      for (const [name, value] of Object.entries(headers)) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (event) => onProgress(Math.min(event.loaded, body.size));
      xhr.onload = () => {
        if (xhr.status < 200 || xhr.status >= 300) return done(refusal(xhr.status, xhr.responseText));
        onProgress(body.size);
        done();
      };
      xhr.onerror = () => done(networkError());
      xhr.onabort = () => done(sendAbortedError());
      signal.addEventListener("abort", abort);
      xhr.send(body);
    });
}

/** The upload over fetch: progress only once the bytes are there. */
export function putWithFetch(fetchImpl: typeof fetch): PutBytes {
  return async ({ url, headers, body, onProgress, signal }) => {
    let res: Response;
    try {
      res = await fetchImpl(url, { method: "PUT", headers, body, credentials: "omit", signal });
    } catch {
      throw signal.aborted ? sendAbortedError() : networkError();
    }
    const text = await res.text().catch(() => "");
    if (!res.ok) throw refusal(res.status, text);
    onProgress(body.size);
  };
}
