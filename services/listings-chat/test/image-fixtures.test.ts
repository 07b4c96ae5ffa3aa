/**
 * The image fixtures are what the photo tests take them for: the metadata-bearing ones really carry GPS, EXIF and
 * XMP (read back with exifr), and the bad ones are refused by sharp for the reason they stand for.
 */
import exifr from "exifr";
import sharp, { type SharpOptions } from "sharp";
import { describe, expect, it } from "vitest";
import {
  decompressionBomb,
  FIXTURE_CAMERA,
  FIXTURE_GPS,
  FIXTURE_XMP_MARKER,
  jpegWithGps,
  photoOfAbout,
  pngChunks,
  pngWithMetadata,
  readMetadata,
  textNamedJpeg,
  truncatedJpeg,
  webpWithMetadata,
  zeroBytes,
} from "./support/images.ts";

/** Decodes fully; sharp may throw synchronously (an empty Buffer), so that becomes a rejection too. */
async function decode(image: Buffer, options?: SharpOptions) {
  return sharp(image, options).toBuffer();
}

function expectFixtureGps(gps: unknown) {
  expect(gps).toMatchObject({
    latitude: expect.closeTo(FIXTURE_GPS.latitude, 4),
    longitude: expect.closeTo(FIXTURE_GPS.longitude, 4),
  });
}

describe("metadata-bearing photos", () => {
  it("jpegWithGps: a 1200×800 JPEG with GPS, camera, Orientation 6 and XMP", async () => {
    const jpeg = await jpegWithGps();
    expect(jpeg.subarray(0, 3)).toEqual(Buffer.from([0xff, 0xd8, 0xff]));
    const info = await sharp(jpeg).metadata();
    expect(info).toMatchObject({ format: "jpeg", width: 1200, height: 800, orientation: 6 });

    const metadata = await readMetadata(jpeg);
    expectFixtureGps(metadata.gps);
    expect(metadata.exif).toMatchObject({ Make: FIXTURE_CAMERA.make, Model: FIXTURE_CAMERA.model });
    expect(metadata.xmp).toBe(true);
    expect(jpeg.includes(FIXTURE_XMP_MARKER)).toBe(true);
    expect(await exifr.orientation(jpeg)).toBe(6);
    expectFixtureGps(await exifr.gps(jpeg));
  });

  it("jpegWithGps takes a size and an orientation, and its pixels are not one flat colour", async () => {
    const jpeg = await jpegWithGps({ width: 320, height: 240, orientation: 3 });
    expect(await sharp(jpeg).metadata()).toMatchObject({ width: 320, height: 240, orientation: 3 });
    const { channels } = await sharp(jpeg).stats();
    for (const channel of channels) expect(channel.stdev).toBeGreaterThan(10);
  });

  it("pngWithMetadata: a 640×480 PNG with GPS in eXIf and XMP in iTXt, every chunk's CRC right", async () => {
    const png = await pngWithMetadata();
    expect(await sharp(png).metadata()).toMatchObject({ format: "png", width: 640, height: 480 });
    const chunks = pngChunks(png);
    expect(chunks.map((chunk) => chunk.type)).toEqual(expect.arrayContaining(["IHDR", "eXIf", "iTXt", "IDAT", "IEND"]));
    expect(chunks.every((chunk) => chunk.crcValid)).toBe(true);

    const metadata = await readMetadata(png);
    expectFixtureGps(metadata.gps);
    expect(metadata.exif).toMatchObject({ Make: FIXTURE_CAMERA.make });
    expect(metadata.xmp).toBe(true);
  });

  it("webpWithMetadata: a 640×480 WebP with GPS in its EXIF chunk and an XMP chunk", async () => {
    const webp = await webpWithMetadata();
    expect(await sharp(webp).metadata()).toMatchObject({ format: "webp", width: 640, height: 480 });
    const metadata = await readMetadata(webp);
    expectFixtureGps(metadata.gps);
    expect(metadata.exif).toMatchObject({ Make: FIXTURE_CAMERA.make, Model: FIXTURE_CAMERA.model });
    expect(metadata.xmp).toBe(true);
  });

  it("each caller gets its own copy: changing it does not change the next caller's", async () => {
    const first = await jpegWithGps();
    const firstCopy = Buffer.from(first);
    first.fill(0);
    expect((await jpegWithGps()).equals(firstCopy)).toBe(true);
  });
});

describe("readMetadata", () => {
  it("finds nothing in images sharp wrote without metadata, whatever the format", async () => {
    const source = await jpegWithGps();
    for (const format of ["jpeg", "png", "webp"] as const) {
      const stripped = await sharp(source).toFormat(format).toBuffer();
      expect(await readMetadata(stripped), format).toEqual({ gps: undefined, exif: undefined, xmp: false });
    }
  });

  it("finds XMP that exifr skips: PNG zTXt, as sharp writes it when keeping metadata", async () => {
    const kept = await sharp(await jpegWithGps())
      .keepMetadata()
      .png()
      .toBuffer();
    expect(pngChunks(kept).some((chunk) => chunk.type === "zTXt")).toBe(true);
    expect((await readMetadata(kept)).xmp).toBe(true);
  });

  it("throws on bytes that are no image it can read, rather than reporting no metadata", async () => {
    await expect(readMetadata(await textNamedJpeg())).rejects.toThrow();
  });
});

describe("inputs the service must refuse", () => {
  it("textNamedJpeg: UTF-8 text, which sharp refuses", async () => {
    const text = await textNamedJpeg();
    expect(text.length).toBeGreaterThan(0);
    expect(new TextDecoder("utf-8", { fatal: true }).decode(text)).toContain("zdjęcie");
    await expect(decode(text)).rejects.toThrow(/unsupported image format/);
  });

  it("truncatedJpeg: starts like a JPEG, and sharp refuses it with failOn truncated", async () => {
    const truncated = await truncatedJpeg();
    expect(truncated.subarray(0, 3)).toEqual(Buffer.from([0xff, 0xd8, 0xff]));
    expect(truncated.length).toBeGreaterThan(10_000);
    // The header still reads: only decoding finds the end missing.
    expect(await sharp(truncated).metadata()).toMatchObject({ format: "jpeg", width: 800, height: 600 });
    await expect(decode(truncated, { failOn: "truncated" })).rejects.toThrow(/premature end|truncated/i);
  });

  it("decompressionBomb: a small, well-formed PNG start declaring 30,000×30,000, refused by the pixel limit", async () => {
    const bomb = await decompressionBomb();
    expect(bomb.length).toBeLessThan(1024);
    const chunks = pngChunks(bomb);
    expect(chunks.map((chunk) => chunk.type)).toEqual(["IHDR", "IDAT", "IEND"]);
    expect(chunks.every((chunk) => chunk.crcValid)).toBe(true);
    expect(await sharp(bomb, { limitInputPixels: false }).metadata()).toMatchObject({
      format: "png",
      width: 30_000,
      height: 30_000,
    });
    await expect(decode(bomb, { limitInputPixels: 50_000_000 })).rejects.toThrow(/exceeds pixel limit/);
  });

  it("zeroBytes: empty, which sharp refuses", async () => {
    const empty = await zeroBytes();
    expect(empty.length).toBe(0);
    await expect(decode(empty)).rejects.toThrow(/empty/i);
  });
});

describe("photoOfAbout", () => {
  it("photoOfAbout(3e6): a 2.7–3.3 MB 4000×3000 JPEG with GPS", async () => {
    const photo = await photoOfAbout(3e6);
    expect(photo.length).toBeGreaterThanOrEqual(2.7e6);
    expect(photo.length).toBeLessThanOrEqual(3.3e6);
    expect(await sharp(photo).metadata()).toMatchObject({ format: "jpeg", width: 4000, height: 3000 });
    expectFixtureGps((await readMetadata(photo)).gps);
  });

  it("hits other sizes within 10 % too", async () => {
    for (const bytes of [150_000, 800_000]) {
      const photo = await photoOfAbout(bytes);
      expect(Math.abs(photo.length - bytes)).toBeLessThanOrEqual(bytes * 0.1);
    }
  });
});
