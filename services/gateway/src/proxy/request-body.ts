/** Why a request body was not read: too big (413) or too slow (408). */
export class BodyRejected extends Error {
  override name = "BodyRejected";
  readonly status: 408 | 413;
  constructor(status: 408 | 413, message: string) {
    super(message);
    this.status = status;
  }
}

export const bodyTooLarge = (maxBytes: number) => new BodyRejected(413, `the request body is over ${maxBytes} bytes`);

export interface ReadBodyOptions {
  maxBytes: number;
  /** The whole body must have arrived within this time after the head. */
  timeoutMs: number;
}

/**
 * Reads a request body into memory, before any upstream connection is taken. Bytes are counted as they come
 * (a declared `Content-Length` over the limit is the caller's to refuse first, without reading: see
 * rest-forward.ts), and the read stops at the first byte over the limit or at the deadline. Undefined for a
 * request without a body.
 */
export async function readBody(
  request: Request,
  { maxBytes, timeoutMs }: ReadBodyOptions,
): Promise<Buffer | undefined> {
  if (!request.body) return undefined;
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new BodyRejected(408, `the request body did not arrive within ${timeoutMs} ms`)),
      timeoutMs,
    );
  });
  try {
    for (;;) {
      const { done, value } = await Promise.race([reader.read(), deadline]);
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) throw bodyTooLarge(maxBytes);
      chunks.push(value);
    }
  } catch (error) {
    // Released, not cancelled: cancelling destroys the socket before the 413 or 408 is written. The server
    // reads and drops the rest for a moment after the answer, then closes (see rest-forward.ts, bodyRefused).
    reader.releaseLock();
    throw error;
  } finally {
    clearTimeout(timer);
  }
  return Buffer.concat(chunks);
}
