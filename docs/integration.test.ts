/**
 * docs/integration.md, followed to the letter: a fresh project made of exactly the guide's files (every code block
 * with a `title`), the packed client and React packages installed from their tarballs, built with Vite and served
 * by a stand-in monolith that signs tokens with the guide's own `monolith/chat-token.ts` (5-second tokens). Two
 * people chat in Chromium on that origin, against a real gateway and chat instance on another origin
 * (CORS_ORIGINS), live, through several token lifetimes.
 */
import { readFileSync, rmSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { pathToFileURL } from "node:url";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { consumerProject, installedVersion, typecheck, viteBuild } from "../packages/client/test/consumer-project.ts";
import { packPublishedPackages } from "../scripts/pack-packages.ts";
import { hasChromium, launchChromium, requireChromium } from "../services/gateway/test/support/demo-browser.ts";
import {
  type E2EGateway,
  type E2EStack,
  freePort,
  randomSecret,
  startE2EStack,
} from "../services/gateway/test/support/e2e.ts";

/** The callbacks given to waitForFunction run in the page: the DOM names they use (this file has no DOM library). */
declare const document: {
  querySelector(selector: string): { textContent: string | null } | null;
  querySelectorAll(selector: string): Iterable<{ textContent: string | null }>;
};

const GUIDE = new URL("./integration.md", import.meta.url);
/** The gateway's address in the guide's `.env`, replaced by the test's. */
const EXAMPLE_CHAT_URL = "https://chat.example.com";
const TOKEN_LIFETIME_S = 5;

/** Every code block of the guide that names a file: its path → its text. */
export function guideFiles(markdown: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const match of markdown.matchAll(/^```\w* title="([^"]+)"\n([\s\S]*?)^```$/gm)) {
    const [, path, text] = match;
    if (!path || text === undefined) continue;
    if (files[path] !== undefined) throw new Error(`the guide names ${path} twice`);
    files[path] = text;
  }
  return files;
}

requireChromium("docs/integration.test.ts");

describe.runIf(hasChromium)("docs/integration.md, built and run as written", () => {
  const secret = randomSecret();
  let workDir: string;
  let stack: E2EStack;
  let gw: E2EGateway;
  let monolith: Server;
  let monolithUrl: string;
  let browser: Browser;
  /** Tokens the stand-in monolith signed, by user. */
  const tokensSigned = new Map<number, number>();

  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), "integration-guide-"));
    const files = guideFiles(readFileSync(GUIDE, "utf8"));
    for (const needed of [
      "index.html",
      "src/main.tsx",
      "src/chat.tsx",
      "monolith/chat-token.ts",
      ".env",
      "tsconfig.json",
    ]) {
      expect(Object.keys(files), `the guide's files`).toContain(needed);
    }
    // The monolith's page is on one origin (localhost), the gateway on another (127.0.0.1).
    const monolithPort = await freePort();
    monolithUrl = `http://localhost:${monolithPort}`;
    stack = await startE2EStack({
      accessTokens: { key: { kind: "secret", secret }, audience: "listings-chat", maxAgeSeconds: 86_400 },
      corsOrigins: [monolithUrl],
    });
    gw = stack.gw;
    files[".env"] = (files[".env"] ?? "").replace(EXAMPLE_CHAT_URL, gw.baseUrl);
    expect(files[".env"]).toContain(gw.baseUrl);

    const packed = await packPublishedPackages(join(workDir, "packs"));
    const app = await consumerProject(join(workDir, "app"), files, [
      packed.client,
      packed.react,
      ...["react", "react-dom", "@types/react", "@types/react-dom", "jose", "vite"].map(
        (name) => `${name}@${installedVersion(name)}`,
      ),
    ]);
    await typecheck(app, "the guide's app");
    await viteBuild(app, "index");

    // The stand-in monolith: a session cookie from /login, the guide's token endpoint, the built page.
    process.env.CHAT_JWT_SECRET = secret;
    process.env.CHAT_TOKEN_TTL_S = String(TOKEN_LIFETIME_S);
    const { chatToken } = (await import(pathToFileURL(join(app, "monolith/chat-token.ts")).href)) as {
      chatToken(userId: number): Promise<string>;
    };
    const site = join(app, "out-index");
    // The built page keeps the guide's placeholder for the monolith's template to fill (the user's id).
    expect(readFileSync(join(site, "index.html"), "utf8")).toContain("{{ user_id }}");
    monolith = createServer((req, res) => void serveMonolith(req, res, site, chatToken, tokensSigned));
    await new Promise<void>((resolve) => monolith.listen(monolithPort, "127.0.0.1", resolve));
    browser = await launchChromium();
  }, 300_000);

  afterAll(async () => {
    await browser?.close();
    await new Promise((resolve) => (monolith ? monolith.close(resolve) : resolve(undefined)));
    await stack?.stop();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  /** A person signed in to the monolith, on its page; `query` is the page's query string. */
  async function signIn(userId: number, query = ""): Promise<Page> {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(error.message));
    await page.goto(`${monolithUrl}/login?user=${userId}&next=${encodeURIComponent(`/${query}`)}`);
    await page.waitForFunction(() => document.querySelector('[data-testid="mode"]')?.textContent === "live", null, {
      timeout: 20_000,
    });
    expect(errors).toEqual([]);
    return page;
  }

  const messagesOf = (page: Page) => page.textContent('[data-testid="messages"]');
  async function send(page: Page, text: string) {
    await page.fill('input[aria-label="Message"]', text);
    await page.click('button[type="submit"]');
  }
  async function waitForMessage(page: Page, text: string) {
    await page.waitForFunction(
      (wanted) => [...document.querySelectorAll('[data-testid="messages"] li')].some((li) => li.textContent === wanted),
      text,
      { timeout: 15_000 },
    );
  }

  it("two people chat through several 5-second token lifetimes, live, from another origin", async () => {
    const [buyer, seller] = [8201, 8202];
    const buyerPage = await signIn(buyer, `?listing=5&seller=${seller}`);
    const sellerPage = await signIn(seller);

    await buyerPage.click("text=Message the seller");
    await buyerPage.waitForSelector('[data-testid="messages"]', { state: "attached" });
    await send(buyerPage, "Hello! Is the bike still for sale?");
    await waitForMessage(buyerPage, "Hello! Is the bike still for sale?");

    // The seller's list shows the new chat with one unread message, live.
    await sellerPage.waitForFunction(
      () => document.querySelector('[data-testid="unread"]')?.textContent === "1",
      null,
      { timeout: 15_000 },
    );
    await sellerPage.click('[data-testid="chat"]');
    await waitForMessage(sellerPage, "Hello! Is the bike still for sale?");

    // Past two token lifetimes: a message each way every few seconds, each one refreshing counts and receipts.
    const started = Date.now();
    for (let round = 1; Date.now() - started < 2.5 * TOKEN_LIFETIME_S * 1000; round++) {
      const [from, to] = round % 2 ? [sellerPage, buyerPage] : [buyerPage, sellerPage];
      await send(from, `message ${round}`);
      await waitForMessage(to, `message ${round}`);
      await new Promise((resolve) => setTimeout(resolve, 2_500));
    }
    for (const page of [buyerPage, sellerPage]) {
      expect(await page.textContent('[data-testid="mode"]')).toBe("live");
      expect(await page.$('[role="alert"]')).toBeNull();
    }
    // Each page asked the monolith for new tokens as the old ones ran out: at least one per lifetime passed.
    for (const user of [buyer, seller])
      expect(tokensSigned.get(user) ?? 0, `tokens of ${user}`).toBeGreaterThanOrEqual(3);
    // Nothing was shown twice.
    const shown = (await messagesOf(buyerPage)) ?? "";
    expect(shown.match(/Hello! Is the bike still for sale\?/g)).toHaveLength(1);
  }, 120_000);
});

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
};

/** The stand-in monolith's routes: its sign-in (a session cookie), the guide's token endpoint, the built page. */
async function serveMonolith(
  req: IncomingMessage,
  res: ServerResponse,
  site: string,
  chatToken: (userId: number) => Promise<string>,
  signed: Map<number, number>,
): Promise<void> {
  const url = new URL(req.url ?? "/", "http://monolith.invalid");
  const session = Number(/(?:^|;\s*)session_user=(\d+)/.exec(req.headers.cookie ?? "")?.[1]);
  if (url.pathname === "/login") {
    const next = url.searchParams.get("next") ?? "/";
    res.writeHead(302, {
      "set-cookie": `session_user=${Number(url.searchParams.get("user"))}; Path=/; HttpOnly; SameSite=Lax`,
      location: next.startsWith("/") ? next : "/",
    });
    return void res.end();
  }
  if (url.pathname === "/auth/chat-token" && req.method === "POST") {
    if (!session) {
      res.writeHead(401, { "content-type": "application/json" });
      return void res.end('{"error":"signed out"}');
    }
    signed.set(session, (signed.get(session) ?? 0) + 1);
    res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
    return void res.end(JSON.stringify({ access_token: await chatToken(session) }));
  }
  const file = normalize(join(site, url.pathname === "/" ? "index.html" : url.pathname));
  if (!file.startsWith(site)) return void res.writeHead(404).end();
  try {
    let body: Buffer | string = readFileSync(file);
    // The page as a server template: the signed-in user's id filled in, as the guide's index.html asks.
    if (file.endsWith(".html")) body = body.toString("utf8").replace("{{ user_id }}", String(session || ""));
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
}
