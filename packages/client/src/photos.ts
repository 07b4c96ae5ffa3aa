/**
 * The photos of one message on their way to storage (CONTRACT §11): checked before any request, each given an
 * upload ticket and sent (three at a time), their progress summed for the page. Uploads that completed are
 * remembered per file and send, so that a retry with the same `client_msg_id` sends only what did not get
 * there.
 */
import { Limits, type UploadContentType, uploadContentTypes } from "./protocol/index.ts";
import { type ChatApi, ChatApiError, sendAbortedError } from "./rest.ts";
import type { PutBytes } from "./upload.ts";

/** Uploads at once: enough to fill a phone's uplink, few enough that one slow file does not starve the rest. */
const PARALLEL_UPLOADS = 3;

export interface UploadProgress {
  /** Bytes of all the message's photos that reached storage … */
  loaded: number;
  /** … of this many. */
  total: number;
}

const megabytes = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

/** What the page calls a file: its name when it is a `File`, else its place in the message. */
const nameOf = (file: Blob, at: number) => (file as { name?: string }).name || `photo ${at + 1}`;

/**
 * A refusal of the server in the page's words: it names a photo by its place and upload id ("photo 2 (Xy…)"),
 * which a person never saw; the page knows the file's name.
 */
export function withFileNames(error: ChatApiError, files: readonly Blob[], uploadIds: readonly string[]): ChatApiError {
  let message = error.message;
  for (const [at, id] of uploadIds.entries()) {
    const file = files[at];
    if (file) message = message.split(`photo ${at + 1} (${id})`).join(nameOf(file, at));
  }
  return message === error.message ? error : new ChatApiError(error.status, error.code, message, error.retryAfterMs);
}

/**
 * Why the server would refuse these photos and this caption, as it would (400 `validation_failed`); undefined
 * when they may go. Checked before any request: a PDF or a 40 MB picture is refused at once, with its name.
 */
export function checkPhotos(files: readonly Blob[], content = ""): ChatApiError | undefined {
  const refuse = (message: string) => new ChatApiError(400, "validation_failed", message);
  if (files.length === 0) return refuse("choose at least one photo");
  if (files.length > Limits.attachmentsPerMessage) {
    return refuse(`at most ${Limits.attachmentsPerMessage} photos in one message (${files.length} chosen)`);
  }
  if ([...content].length > Limits.maxContentChars) {
    return refuse(`a caption is at most ${Limits.maxContentChars} characters`);
  }
  for (const [at, file] of files.entries()) {
    if (!uploadContentTypes.includes(file.type as UploadContentType)) {
      return refuse(`${nameOf(file, at)} is not a JPEG, PNG or WebP photo (${file.type || "unknown type"})`);
    }
    if (file.size === 0) return refuse(`${nameOf(file, at)} is empty`);
    if (file.size > Limits.uploadMaxBytes) {
      const limit = megabytes(Limits.uploadMaxBytes);
      return refuse(`${nameOf(file, at)} is ${megabytes(file.size)}: a photo may be at most ${limit}`);
    }
  }
  return undefined;
}

/** `task` over `items`, at most `limit` at once, results in order; the first failure rejects at once. */
async function inParallel<T, R>(items: readonly T[], limit: number, task: (item: T, at: number) => Promise<R>) {
  const results: R[] = [];
  let next = 0;
  const worker = async () => {
    for (let at = next++; at < items.length; at = next++) results[at] = await task(items[at] as T, at);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export class PhotoUploads {
  private readonly api: ChatApi;
  private readonly put: PutBytes;
  /** Uploads that completed, by file, with the send they belong to (an upload is attached to one message). */
  private readonly completed = new WeakMap<Blob, { clientMsgId: string; uploadId: string }>();

  constructor(api: ChatApi, put: PutBytes) {
    this.api = api;
    this.put = put;
  }

  /**
   * Sends `files` to storage for the send `clientMsgId`: their upload ids, in order. The first failure aborts
   * the uploads still going and rejects; so does `signal`.
   */
  async upload(
    files: readonly Blob[],
    clientMsgId: string,
    onProgress?: (progress: UploadProgress) => void,
    signal?: AbortSignal,
  ): Promise<string[]> {
    const stop = new AbortController();
    const abort = () => stop.abort();
    signal?.addEventListener("abort", abort);
    const total = files.reduce((sum, file) => sum + file.size, 0);
    const loaded = files.map((file) => (this.completed.get(file)?.clientMsgId === clientMsgId ? file.size : 0));
    const report = () => onProgress?.({ loaded: loaded.reduce((sum, n) => sum + n, 0), total });
    report();
    try {
      return await inParallel(files, PARALLEL_UPLOADS, async (file, at) => {
        const done = this.completed.get(file);
        if (done?.clientMsgId === clientMsgId) return done.uploadId;
        if (stop.signal.aborted) throw sendAbortedError();
        const ticket = await this.api.createUpload(file.type as UploadContentType, file.size);
        if (stop.signal.aborted) throw sendAbortedError();
        await this.put({
          url: this.api.gatewayUrl(ticket.url),
          headers: ticket.headers,
          body: file,
          signal: stop.signal,
          onProgress: (bytes) => {
            loaded[at] = bytes;
            report();
          },
        });
        this.completed.set(file, { clientMsgId, uploadId: ticket.upload_id });
        return ticket.upload_id;
      });
    } catch (error) {
      stop.abort();
      throw signal?.aborted ? sendAbortedError() : error;
    } finally {
      signal?.removeEventListener("abort", abort);
    }
  }

  /** The uploads of `files` are used (stored in a message) or refused: a next send uploads them again. */
  forget(files: readonly Blob[]): void {
    for (const file of files) this.completed.delete(file);
  }
}
