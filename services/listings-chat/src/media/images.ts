import sharp, { type Metadata, type Sharp, type SharpOptions } from "sharp";

/** The image types a person may send (CONTRACT §11), and sharp's name for each. */
export const photoTypes = { "image/jpeg": "jpeg", "image/png": "png", "image/webp": "webp" } as const;
export type PhotoType = keyof typeof photoTypes;
export const isPhotoType = (type: string): type is PhotoType => Object.hasOwn(photoTypes, type);

/** A file that is not the image it claims to be, or not one we will decode: the message says which. */
export class InvalidImage extends Error {
  override name = "InvalidImage";
}

export interface ProcessedPhoto {
  photo: Buffer;
  thumb: Buffer;
  /** The stripped photo's, after its orientation was applied. */
  width: number;
  height: number;
}

export interface ImageLimits {
  /** Images larger than this many pixels are refused before they are decoded (a decompression bomb). */
  maxPixels: number;
  /**
   * The stored photo's longest side: a bigger one is scaled down (a chat needs no 8,000-px photo), which also
   * lets libvips decode a JPEG or WebP at a fraction of its size, so a 50-megapixel photo costs no 400 MB.
   */
  maxSide: number;
  /** The thumbnail's longest side (CONTRACT §11: at most 320 px). */
  thumbSide: number;
  /** Images processed at once by this process; the others wait their turn. */
  concurrency: number;
}

export const defaultImageLimits: ImageLimits = { maxPixels: 50_000_000, maxSide: 4096, thumbSide: 320, concurrency: 2 };

/** The first bytes of each type: a file is judged by what it is, not by what it is called. */
function looksLike(type: PhotoType, bytes: Buffer): boolean {
  switch (type) {
    case "image/jpeg":
      return bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
    case "image/png":
      return bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    case "image/webp":
      return bytes.subarray(0, 4).toString("latin1") === "RIFF" && bytes.subarray(8, 12).toString("latin1") === "WEBP";
  }
}

/** The stripped photo in its own format: sharp writes no metadata unless asked (no EXIF, GPS, XMP, ICC). */
function encoded(image: Sharp, type: PhotoType): Sharp {
  switch (type) {
    case "image/jpeg":
      return image.jpeg({ quality: 85 });
    case "image/png":
      return image.png({ compressionLevel: 6 });
    case "image/webp":
      return image.webp({ quality: 85 });
  }
}

/** A small semaphore: at most `limit` at once, the rest in arrival order; a freed turn goes to the first waiting. */
function createTurns(limit: number) {
  let running = 0;
  const queue: (() => void)[] = [];
  const release = () => {
    const next = queue.shift();
    // Handed over as it is: the count stays, so no newcomer can slip in between.
    if (next) next();
    else running -= 1;
  };
  return {
    async take<T>(work: () => Promise<T>): Promise<T> {
      if (running < limit) running += 1;
      else await new Promise<void>((resolve) => queue.push(resolve));
      try {
        return await work();
      } finally {
        release();
      }
    },
    get waiting() {
      return queue.length;
    },
  };
}

/**
 * Checks, strips and thumbnails photos. The decoding and encoding run in libvips's threads (sharp's work is
 * queued on libuv's pool), so the event loop that serves sockets only waits for the answer; `concurrency`
 * bounds how many images are in memory at once (read, decoded and encoded: the others wait with nothing
 * loaded), and `maxPixels` refuses a bomb from its header, undecoded.
 */
export function createImageProcessor(limits: ImageLimits = defaultImageLimits) {
  // No cache of decoded images between requests: each photo is seen once, and the cache would only hold memory.
  sharp.cache(false);
  // One libvips thread per image: `concurrency` images use the machine's cores, and never more.
  sharp.concurrency(1);
  const turns = createTurns(limits.concurrency);

  async function processNow(bytes: Buffer, type: PhotoType): Promise<ProcessedPhoto> {
    if (bytes.length === 0) throw new InvalidImage("the file is empty");
    if (!looksLike(type, bytes))
      throw new InvalidImage(`the file is not ${photoTypes[type].toUpperCase()}, as it claims`);
    // `truncated`: a cut-off file is refused rather than shown half grey; lesser warnings (odd markers that
    // phones write) pass.
    const options: SharpOptions = { limitInputPixels: limits.maxPixels, failOn: "truncated" };
    let metadata: Metadata;
    try {
      metadata = await sharp(bytes, options).metadata();
    } catch (error) {
      throw new InvalidImage(`the file could not be read as an image (${reason(error)})`);
    }
    if (metadata.format !== photoTypes[type]) {
      throw new InvalidImage(
        `the file is ${metadata.format ?? "of an unknown type"}, not ${photoTypes[type]} as it claims`,
      );
    }
    const pixels = (metadata.width ?? 0) * (metadata.height ?? 0);
    if (pixels > limits.maxPixels) {
      throw new InvalidImage(
        `the image has ${metadata.width} × ${metadata.height} pixels, over ${limits.maxPixels.toLocaleString("en")}: send a smaller one`,
      );
    }
    try {
      // Orientation first (the EXIF tag that says how to turn it goes with the rest of the metadata). Two
      // pipelines on the same bytes, not clone(): a clone copies the whole input again, garbage for every photo.
      const scaledTo = (side: number) =>
        encoded(
          sharp(bytes, options)
            .autoOrient()
            .resize({ width: side, height: side, fit: "inside", withoutEnlargement: true }),
          type,
        );
      const [photo, thumb] = await Promise.all([
        scaledTo(limits.maxSide).toBuffer({ resolveWithObject: true }),
        scaledTo(limits.thumbSide).toBuffer(),
      ]);
      return { photo: photo.data, thumb, width: photo.info.width, height: photo.info.height };
    } catch (error) {
      throw new InvalidImage(`the image could not be decoded (${reason(error)})`);
    }
  }

  return {
    /**
     * The photo stripped of its metadata, and its thumbnail; InvalidImage when the bytes are not a `type` image
     * we accept. `load` reads the bytes in the image's turn, so that photos waiting for one hold no memory.
     */
    process(load: () => Promise<Buffer>, type: PhotoType): Promise<ProcessedPhoto> {
      return turns.take(async () => processNow(await load(), type));
    },
    /** Photos waiting for their turn. */
    get waiting() {
      return turns.waiting;
    },
  };
}

export type ImageProcessor = ReturnType<typeof createImageProcessor>;

/** libvips's first line, which names the problem ("VipsJpeg: premature end of JPEG image"), without paths. */
function reason(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0]?.slice(0, 200) ?? "unknown error";
}
