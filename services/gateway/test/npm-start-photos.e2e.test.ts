/**
 * `npm start` (scripts/start.ts) takes photos with nothing more to set up (CONTRACT §11: STORAGE=fs, the
 * development default): both services as their own processes, on free ports and a temporary DATA_DIR; a JPEG
 * with GPS tags goes up through the gateway's signed `/files` URL, is sent, and comes back through the 302
 * without them; the files live under DATA_DIR/media. SIGTERM stops both with exit code 0.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { jpegWithGps, readMetadata } from "../../listings-chat/test/support/images.ts";
import { freePort, pollUntil } from "./support/e2e.ts";

const ROOT = resolve(import.meta.dirname, "../../..");

const withoutVariables = (env: NodeJS.ProcessEnv, names: string[]) =>
  Object.fromEntries(Object.entries(env).filter(([name]) => !names.includes(name)));

describe("npm start", () => {
  let child: ChildProcess;
  let exited: Promise<number | null>;
  let dataDir: string;
  let gateway: string;
  let output = "";

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "lc-npm-start-"));
    const [chatPort, gatewayPort] = [await freePort(), await freePort()];
    gateway = `http://127.0.0.1:${gatewayPort}`;
    child = spawn(process.execPath, ["scripts/start.ts"], {
      cwd: ROOT,
      env: {
        // Nothing of the test's own environment decides what the services use (a database, Redis, a storage).
        ...withoutVariables(process.env, ["DATABASE_URL", "REDIS_URL", "STORAGE", "INTERNAL_TOKEN", "BASE_PATH"]),
        CHAT_PORT: String(chatPort),
        GATEWAY_PORT: String(gatewayPort),
        DATA_DIR: dataDir,
        DEMO_SEED: "0",
        NODE_ENV: "development",
        LOG_LEVEL: "warn",
        NO_COLOR: "1",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    child.stdout?.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr?.on("data", (chunk) => {
      output += chunk;
    });
    exited = new Promise((done) => child.once("exit", (code) => done(code)));
    await pollUntil(
      () => {
        if (child.exitCode !== null) throw new Error(`npm start exited with ${child.exitCode}:\n${output}`);
        return output.includes("listings-chat is running");
      },
      90_000,
      100,
    );
  }, 120_000);

  afterAll(async () => {
    if (child.exitCode === null) child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("takes a photo with no storage configured, and gives it back without its GPS tags", async () => {
    const call = async (path: string, init: RequestInit & { token?: string } = {}) => {
      const headers = new Headers(init.headers);
      if (init.token) headers.set("authorization", `Bearer ${init.token}`);
      return fetch(`${gateway}${path}`, { ...init, headers, redirect: "manual" });
    };
    const token = async (userId: number) =>
      (
        (await (
          await call("/api/dev/token", {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ user_id: userId }),
          })
        ).json()) as { access_token: string }
      ).access_token;
    const [buyer, seller] = [await token(41), await token(42)];
    const json = { "content-type": "application/json" };
    const chat = (await (
      await call("/api/v1/chats", {
        method: "POST",
        token: buyer,
        headers: json,
        body: JSON.stringify({ listing_id: 9, seller_id: 42 }),
      })
    ).json()) as { id: number };

    const photo = await jpegWithGps({ width: 800, height: 600 });
    const grant = (await (
      await call("/api/v1/uploads", {
        method: "POST",
        token: buyer,
        headers: json,
        body: JSON.stringify({ content_type: "image/jpeg", size: photo.length }),
      })
    ).json()) as { upload_id: string; url: string; headers: Record<string, string> };
    const put = await call(grant.url, { method: "PUT", headers: grant.headers, body: new Uint8Array(photo) });
    expect(put.status).toBe(200);
    const sent = await call(`/api/v1/chats/${chat.id}/messages`, {
      method: "POST",
      token: buyer,
      headers: json,
      body: JSON.stringify({ content: "", attachments: [grant.upload_id] }),
    });
    expect(sent.status).toBe(201);
    const message = (await sent.json()) as { attachments: { url: string }[] };
    const redirect = await call(message.attachments[0]!.url, { token: seller });
    expect(redirect.status).toBe(302);
    const bytes = Buffer.from(await (await call(redirect.headers.get("location")!)).arrayBuffer());
    expect(await readMetadata(bytes)).toEqual({ gps: undefined, exif: undefined, xmp: false });
    // Under DATA_DIR: the stripped photo and its thumbnail, and no longer the upload as it came.
    expect(readdirSync(join(dataDir, "media", "photos"))).toContain(grant.upload_id);
    expect(readdirSync(join(dataDir, "media", "thumbs"))).toContain(grant.upload_id);
    expect(readdirSync(join(dataDir, "media", "uploads"))).not.toContain(grant.upload_id);
  });

  it("stops both services on SIGTERM with exit code 0", async () => {
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  }, 30_000);
});
