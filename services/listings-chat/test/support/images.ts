/**
 * Image fixtures for the photo tests: real photos that carry the metadata the service must strip (EXIF with GPS,
 * XMP), and the inputs it must refuse (text named .jpg, a cut-off JPEG, a decompression bomb, zero bytes).
 * Deterministic (seeded pseudo-random pixels, never Math.random) and built once per test file: each generator
 * caches its result and hands out copies, so a test that changes bytes never changes another test's fixture.
 */
import { crc32, deflateSync } from "node:zlib";
import exifr from "exifr";
import sharp from "sharp";

/** Where the fixtures say they were taken (Warsaw): what must never reach another user. */
export const FIXTURE_GPS = { latitude: 52.2297, longitude: 21.0122 } as const;
export const FIXTURE_CAMERA = { make: "ListingsCam", model: "Fixture One" } as const;
/** A word of the fixtures' XMP packet, to look for in bytes that should hold none. */
export const FIXTURE_XMP_MARKER = "listings-chat-fixture";

const xmpPacket = [
  '<?xpacket begin="\uFEFF" id="W5M0MpCehiHzreSzNTczkc9d"?>',
  '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">',
  '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"',
  ' xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"',
  ` xmp:CreatorTool="${FIXTURE_XMP_MARKER}" photoshop:City="Warszawa"/>`,
  '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>',
].join("");

/** Degrees as EXIF's three rationals (degrees, minutes, hundredths of seconds), in libvips' string form. */
function exifRationals(degrees: number): string {
  const whole = Math.floor(degrees);
  const minutes = Math.floor((degrees - whole) * 60);
  const hundredthsOfSeconds = Math.round(((degrees - whole) * 60 - minutes) * 60 * 100);
  return `${whole}/1 ${minutes}/1 ${hundredthsOfSeconds}/100`;
}

/** What a phone writes: camera, GPS position (IFD3 is the GPS IFD; sharp writes it, checked with exifr). */
const cameraExif = {
  IFD0: { Make: FIXTURE_CAMERA.make, Model: FIXTURE_CAMERA.model, DateTime: "2026:05:04 12:34:56" },
  IFD3: {
    GPSLatitudeRef: "N",
    GPSLatitude: exifRationals(FIXTURE_GPS.latitude),
    GPSLongitudeRef: "E",
    GPSLongitude: exifRationals(FIXTURE_GPS.longitude),
  },
};

/** mulberry32: a tiny seeded generator, so that every run builds the same bytes. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Raw RGB of a plausible outdoor photo: a sky gradient, a sun, a horizon with a few blocks, and sensor-like noise
 * of `noise` levels (its amount is what makes a JPEG big: phone photos are noisy and detailed).
 */
function photoPixels(width: number, height: number, noise: number, seed: number): Buffer {
  const random = seededRandom(seed);
  const pixels = Buffer.allocUnsafe(width * height * 3);
  const horizon = Math.round(height * 0.62);
  const sunX = width * 0.72;
  const sunY = height * 0.25;
  const sunRadiusSquared = (Math.min(width, height) * 0.09) ** 2;
  const blockWidth = Math.max(1, Math.round(width / 9));
  let offset = 0;
  for (let y = 0; y < height; y++) {
    const skyShade = y / horizon;
    for (let x = 0; x < width; x++) {
      let r: number;
      let g: number;
      let b: number;
      if ((x - sunX) ** 2 + (y - sunY) ** 2 < sunRadiusSquared) {
        r = 250;
        g = 220;
        b = 120;
      } else if (y < horizon) {
        r = 70 + 110 * skyShade;
        g = 120 + 80 * skyShade;
        b = 210 - 30 * skyShade;
      } else {
        // Blocks of alternating height on the horizon, then a field that darkens towards the bottom.
        const block = Math.floor(x / blockWidth);
        const blockTop = horizon - (block % 3) * height * 0.06;
        const field = (y - horizon) / (height - horizon);
        r = y < blockTop ? 90 : 60 + 40 * field + (block % 2) * 25;
        g = y < blockTop ? 90 : 110 - 30 * field;
        b = y < blockTop ? 100 : 50 + (block % 2) * 10;
      }
      const grain = (random() - 0.5) * noise;
      pixels[offset++] = Math.max(0, Math.min(255, r + grain));
      pixels[offset++] = Math.max(0, Math.min(255, g + grain * 0.9));
      pixels[offset++] = Math.max(0, Math.min(255, b + grain * 1.1));
    }
  }
  return pixels;
}

function photo(width: number, height: number, noise: number, seed = 26) {
  return sharp(photoPixels(width, height, noise, seed), { raw: { width, height, channels: 3 } });
}

const fixtures = new Map<string, Promise<Buffer>>();

/** Builds a fixture once; every caller gets its own copy of the bytes. */
async function cached(key: string, build: () => Promise<Buffer>): Promise<Buffer> {
  let fixture = fixtures.get(key);
  if (!fixture) {
    fixture = build();
    fixtures.set(key, fixture);
    // A failed build is not remembered: the next call tries again and reports its own error.
    fixture.catch(() => fixtures.delete(key));
  }
  return Buffer.from(await fixture);
}

/**
 * A JPEG photo (default 1200×800) with EXIF (camera, GPS, Orientation, default 6: shown rotated 90° clockwise)
 * and an XMP packet. Orientation goes through withMetadata: sharp overwrites withExif's IFD0 Orientation.
 */
export function jpegWithGps(options: { width?: number; height?: number; orientation?: number } = {}): Promise<Buffer> {
  const { width = 1200, height = 800, orientation = 6 } = options;
  return cached(`jpeg:${width}x${height}:${orientation}`, () =>
    photo(width, height, 12)
      .jpeg({ quality: 85 })
      .withExif(cameraExif)
      .withMetadata({ orientation })
      .withXmp(xmpPacket)
      .toBuffer(),
  );
}

/**
 * A 640×480 PNG with an eXIf chunk (camera, GPS) and an uncompressed iTXt XMP chunk. The iTXt is spliced in by hand:
 * sharp writes XMP to PNG as zTXt, which exifr does not read.
 */
export function pngWithMetadata(): Promise<Buffer> {
  return cached("png", async () => {
    const png = await photo(640, 480, 6).png().withExif(cameraExif).toBuffer();
    // iTXt: keyword, NUL, compression flag 0, method 0, empty language tag NUL, empty translated keyword NUL, text.
    const xmpChunk = pngChunk("iTXt", Buffer.from(`XML:com.adobe.xmp\0\0\0\0\0${xmpPacket}`, "utf8"));
    const firstIdat = pngChunks(png).find((chunk) => chunk.type === "IDAT");
    if (!firstIdat) throw new Error("sharp wrote a PNG without IDAT");
    return Buffer.concat([png.subarray(0, firstIdat.start), xmpChunk, png.subarray(firstIdat.start)]);
  });
}

/** A 640×480 WebP with EXIF (camera, GPS) and XMP chunks (sharp writes both into the RIFF container). */
export function webpWithMetadata(): Promise<Buffer> {
  return cached("webp", () =>
    photo(640, 480, 8)
      .webp({ quality: 80 })
      .withExif(cameraExif)
      .withMetadata({ orientation: 6 })
      .withXmp(xmpPacket)
      .toBuffer(),
  );
}

/** Plain UTF-8 text: what arrives when someone renames notes.txt to photo.jpg. */
export function textNamedJpeg(): Promise<Buffer> {
  return cached("text", async () =>
    Buffer.from("Mieszkanie do wynajęcia, 3 pokoje, blisko metra.\nTo nie jest zdjęcie, tylko tekst.\n", "utf8"),
  );
}

/**
 * A real JPEG cut after 60 % of its bytes: it starts like a JPEG (FF D8 FF) but its scan data ends early, so that
 * `sharp(buf, { failOn: "truncated" })` refuses it. Noisy, so that the cut lands well inside the scan.
 */
export function truncatedJpeg(): Promise<Buffer> {
  return cached("truncated", async () => {
    const whole = await photo(800, 600, 60).jpeg({ quality: 90 }).toBuffer();
    return whole.subarray(0, Math.floor(whole.length * 0.6));
  });
}

/**
 * A PNG of a few hundred bytes that declares 30,000 × 30,000 grayscale pixels (900 megapixels, 900 MB decoded):
 * signature, IHDR, an IDAT holding a valid zlib stream of four zero rows, IEND. A pixel limit must refuse it from
 * the header, before any decoding.
 */
export function decompressionBomb(): Promise<Buffer> {
  return cached("bomb", async () => {
    const side = 30_000;
    const header = Buffer.alloc(13);
    header.writeUInt32BE(side, 0);
    header.writeUInt32BE(side, 4);
    header[8] = 8; // bit depth
    header[9] = 0; // grayscale; compression, filter and interlace stay 0
    // Each row: a filter-type byte, then one byte per pixel.
    const rows = deflateSync(Buffer.alloc(4 * (side + 1)));
    return Buffer.concat([
      PNG_SIGNATURE,
      pngChunk("IHDR", header),
      pngChunk("IDAT", rows),
      pngChunk("IEND", Buffer.alloc(0)),
    ]);
  });
}

/** An empty upload. */
export function zeroBytes(): Promise<Buffer> {
  return Promise.resolve(Buffer.alloc(0));
}

/**
 * A phone-like JPEG (4:3, noisy, camera EXIF with GPS, XMP) whose size is within ±10 % of `bytes`. The pixel count
 * follows the target (about 4000×3000 for 3 MB) and the quality is searched until the size fits.
 */
export function photoOfAbout(bytes: number): Promise<Buffer> {
  if (!(bytes >= 20_000)) throw new RangeError(`photoOfAbout: ${bytes} bytes is not a photo size (at least 20000)`);
  return cached(`photo:${bytes}`, async () => {
    // About 0.25 bytes per pixel at quality 88 with this noise: 12 megapixels (4000×3000) for 3 MB.
    const pixelCount = bytes / 0.25;
    const width = Math.round(Math.sqrt((pixelCount * 4) / 3));
    const height = Math.round((width * 3) / 4);
    const source = photo(width, height, 28);
    const encode = (quality: number) =>
      source
        .clone()
        .jpeg({ quality })
        .withExif(cameraExif)
        .withMetadata({ orientation: 6 })
        .withXmp(xmpPacket)
        .toBuffer();
    // Quality 88 (a phone's) lands near the target at this noise; otherwise step by the size ratio (the size about
    // doubles every 12 quality steps here) inside the bracket found so far, and keep the closest attempt.
    let low = 1;
    let high = 100;
    let quality = 88;
    let best: Buffer | undefined;
    const tried = new Set<number>();
    while (!tried.has(quality)) {
      tried.add(quality);
      const attempt = await encode(quality);
      if (!best || Math.abs(attempt.length - bytes) < Math.abs(best.length - bytes)) best = attempt;
      if (Math.abs(attempt.length - bytes) <= bytes * 0.04) break;
      if (attempt.length < bytes) low = quality + 1;
      else high = quality - 1;
      if (low > high) break;
      const step = Math.round(12 * Math.log2(bytes / attempt.length)) || Math.sign(bytes - attempt.length);
      quality = Math.min(high, Math.max(low, quality + step));
    }
    if (!best || Math.abs(best.length - bytes) > bytes * 0.1) {
      throw new Error(`photoOfAbout(${bytes}): no quality gives a size within 10 % (closest ${best?.length} bytes)`);
    }
    return best;
  });
}

/** What a test needs to know about an image's metadata: is there any EXIF, GPS position or XMP left? */
export interface ImageMetadata {
  /** exifr's GPS block (GPSLatitude…, latitude, longitude), undefined when there is none. */
  gps: unknown;
  /** Every TIFF tag found (IFD0, Exif and GPS IFDs merged), undefined when there is no EXIF at all. */
  exif: Record<string, unknown> | undefined;
  /** An XMP packet is present (found by exifr, or by its container's marker: PNG zTXt XMP, which exifr skips). */
  xmp: boolean;
}

/**
 * Reads EXIF, GPS and XMP with exifr (not with sharp, the library under test). exifr 7 cannot read WebP, so for
 * WebP the EXIF chunk is taken from the RIFF container and given to exifr as the TIFF it is. Throws on a format
 * neither knows: an assertion of "no metadata" must never pass because nothing was read.
 */
export async function readMetadata(image: Buffer): Promise<ImageMetadata> {
  const container = containerMetadata(image);
  const source = container.format === "webp" ? container.tiff : image;
  // IFD0 is always read (exifr cannot turn it off); mergeOutput false keeps the blocks apart.
  const parsed: (Record<string, Record<string, unknown> | undefined> & { errors?: unknown[] }) | undefined = source
    ? await exifr.parse(source, { tiff: true, exif: true, gps: true, xmp: true, mergeOutput: false })
    : undefined;
  // exifr reports a broken block in `errors` and goes on: here it must fail the test, not read as "no EXIF".
  if (parsed?.errors?.length) throw new Error("exifr could not read the metadata", { cause: parsed.errors });
  const tags = { ...parsed?.ifd0, ...parsed?.exif, ...parsed?.gps };
  return {
    gps: parsed?.gps,
    exif: Object.keys(tags).length > 0 ? tags : undefined,
    xmp: container.xmp || parsed?.xmp !== undefined,
  };
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const JPEG_XMP_HEADERS = ["http://ns.adobe.com/xap/1.0/\0", "http://ns.adobe.com/xmp/extension/\0"];

/** A PNG chunk: length, type, data, and the CRC-32 of type and data. */
function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const typeAndData = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(typeAndData));
  return Buffer.concat([length, typeAndData, crc]);
}

/** The chunks of a PNG (type, data, and where the chunk starts), stopping at the end of the bytes. */
export function pngChunks(png: Buffer): { type: string; data: Buffer; start: number; crcValid: boolean }[] {
  const chunks = [];
  let offset = PNG_SIGNATURE.length;
  while (offset + 12 <= png.length) {
    const length = png.readUInt32BE(offset);
    const end = offset + 12 + length;
    if (end > png.length) break;
    const typeAndData = png.subarray(offset + 4, offset + 8 + length);
    chunks.push({
      type: png.toString("latin1", offset + 4, offset + 8),
      data: png.subarray(offset + 8, offset + 8 + length),
      start: offset,
      crcValid: crc32(typeAndData) === png.readUInt32BE(offset + 8 + length),
    });
    offset = end;
  }
  return chunks;
}

/** The metadata a container holds by its own markers: JPEG APP1 segments, PNG text chunks, WebP RIFF chunks. */
function containerMetadata(image: Buffer): { format: "jpeg" | "png" | "webp" | "other"; xmp: boolean; tiff?: Buffer } {
  if (image.length >= 3 && image[0] === 0xff && image[1] === 0xd8 && image[2] === 0xff) {
    return { format: "jpeg", xmp: jpegApp1Payloads(image).some(isJpegXmp) };
  }
  if (image.subarray(0, 8).equals(PNG_SIGNATURE)) {
    const xmp = pngChunks(image).some(
      (chunk) =>
        ["iTXt", "zTXt", "tEXt"].includes(chunk.type) && chunk.data.toString("latin1", 0, 18) === "XML:com.adobe.xmp\0",
    );
    return { format: "png", xmp };
  }
  if (image.toString("latin1", 0, 4) === "RIFF" && image.toString("latin1", 8, 12) === "WEBP") {
    let xmp = false;
    let tiff: Buffer | undefined;
    for (let offset = 12; offset + 8 <= image.length; ) {
      const type = image.toString("latin1", offset, offset + 4);
      const size = image.readUInt32LE(offset + 4);
      const data = image.subarray(offset + 8, offset + 8 + size);
      if (type === "XMP ") xmp = true;
      // Writers disagree on an "Exif\0\0" prefix before the TIFF header: exifr wants the TIFF itself.
      if (type === "EXIF") tiff = data.toString("latin1", 0, 6) === "Exif\0\0" ? data.subarray(6) : data;
      offset += 8 + size + (size % 2);
    }
    return { format: "webp", xmp, tiff };
  }
  return { format: "other", xmp: false };
}

function isJpegXmp(payload: Buffer): boolean {
  return JPEG_XMP_HEADERS.some((header) => payload.toString("latin1", 0, header.length) === header);
}

/** The payloads of a JPEG's APP1 segments, up to the start of the scan. */
function jpegApp1Payloads(jpeg: Buffer): Buffer[] {
  const payloads = [];
  let offset = 2;
  while (offset + 4 <= jpeg.length && jpeg[offset] === 0xff) {
    const marker = jpeg[offset + 1]!;
    if (marker === 0xda || marker === 0xd9) break; // start of scan, end of image
    const length = jpeg.readUInt16BE(offset + 2);
    if (marker === 0xe1) payloads.push(jpeg.subarray(offset + 4, offset + 2 + length));
    offset += 2 + length;
  }
  return payloads;
}
