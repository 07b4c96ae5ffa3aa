/**
 * The demo's seed (development only): a few listings, people, chats, messages and one system message, put
 * through the platform's internal API on the chat port (CONTRACT §8, with the internal token) and, for what
 * the people say themselves, through the gateway with dev tokens (`POST /api/dev/token`, DEV_AUTH=1).
 * `npm start` runs it once both services answer (scripts/start.ts; `DEMO_SEED=0` skips it); the browser test
 * of the demo (test/platform-demo.e2e.test.ts) runs the same function.
 *
 * Idempotent: listings and people are upserts, an open chat answers the existing one, and every message has
 * a fixed `client_msg_id`, so running it again on the same database adds nothing. Pictures are the SVGs the
 * gateway's demo routes serve at `/dev/img/…` (placeholder-images.ts), so the demo needs no other network.
 */
import type { Chat, ListingStatus, Message } from "@listings-chat/shared";

export interface DemoPerson {
  id: number;
  display_name: string;
  /** A picture under `/dev/img/`, or none: the page then draws the initials. */
  avatar: string | null;
}

export interface DemoListing {
  id: number;
  seller_id: number;
  title: string;
  price_minor: number;
  currency: string;
  image: string;
  status: ListingStatus;
}

export interface DemoChat {
  listing_id: number;
  buyer_id: number;
  /** What the people said, in order: `from` is the buyer or the seller. */
  messages: { from: "buyer" | "seller"; content: string }[];
  /** What the platform said after them (a system message). */
  system?: { content: string; data: Record<string, unknown> };
}

export const DEMO_PEOPLE: readonly DemoPerson[] = [
  { id: 1, display_name: "Anna Keller", avatar: "anna.svg" },
  { id: 7, display_name: "Marco Rossi", avatar: "marco.svg" },
  { id: 3, display_name: "Lena Vogel", avatar: "lena.svg" },
  { id: 9, display_name: "Tom Baker", avatar: null },
];

export const DEMO_LISTINGS: readonly DemoListing[] = [
  {
    id: 42,
    seller_id: 7,
    title: "City bike, 28-inch, 7 gears",
    price_minor: 45_000,
    currency: "EUR",
    image: "bike.svg",
    status: "active",
  },
  {
    id: 43,
    seller_id: 7,
    title: "Oak writing desk",
    price_minor: 12_000,
    currency: "EUR",
    image: "desk.svg",
    status: "reserved",
  },
  {
    id: 44,
    seller_id: 3,
    title: "Film camera with 50 mm lens",
    price_minor: 8_500,
    currency: "EUR",
    image: "camera.svg",
    status: "sold",
  },
  {
    id: 45,
    seller_id: 9,
    title: "Velvet armchair",
    price_minor: 6_000,
    currency: "EUR",
    image: "armchair.svg",
    status: "removed",
  },
];

export const DEMO_CHATS: readonly DemoChat[] = [
  {
    listing_id: 42,
    buyer_id: 1,
    messages: [
      { from: "buyer", content: "Hi! Is the bike still available?" },
      { from: "seller", content: "Yes, it is. Serviced last month, new tyres." },
      { from: "buyer", content: "Would you take 420?" },
    ],
    system: { content: "Offer made: 420 EUR", data: { offer_minor: 42_000, currency: "EUR" } },
  },
  {
    listing_id: 44,
    buyer_id: 1,
    messages: [
      { from: "buyer", content: "Does the camera come with a strap?" },
      { from: "seller", content: "Sorry, it sold this morning." },
    ],
  },
  {
    listing_id: 45,
    buyer_id: 1,
    messages: [{ from: "buyer", content: "Any stains on the armchair?" }],
  },
  {
    listing_id: 43,
    buyer_id: 3,
    messages: [
      { from: "buyer", content: "Can I pick the desk up on Saturday?" },
      { from: "seller", content: "Sure, I reserved it for you until then." },
    ],
  },
];

export interface SeedOptions {
  /** The chat service's own port (the internal API), e.g. http://127.0.0.1:8086. */
  chatUrl: string;
  /** The gateway (dev tokens, the public API as the people, and the pictures). */
  gatewayUrl: string;
  internalToken: string;
  /** Where the page loads the pictures from; the gateway by default. */
  imageBaseUrl?: string;
}

export interface SeedResult {
  /** The chats as their buyers see them, in the order of DEMO_CHATS. */
  chats: Chat[];
  /** The system messages posted (or found again), by listing id. */
  systemMessages: Record<number, Message>;
}

class SeedError extends Error {}

async function call<T>(
  base: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed as T };
}

function expectStatus(answer: { status: number; body: unknown }, ok: number[], what: string): void {
  if (!ok.includes(answer.status)) {
    throw new SeedError(`demo seed: ${what} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
  }
}

/** Puts the demo's listings, people, chats and messages; safe to run again. */
export async function seedDemo(options: SeedOptions): Promise<SeedResult> {
  const { chatUrl, gatewayUrl, internalToken } = options;
  const images = `${options.imageBaseUrl ?? gatewayUrl}/dev/img/`;
  const internal = { "x-internal-token": internalToken };
  const platform = <T>(method: string, path: string, body?: unknown) => call<T>(chatUrl, method, path, internal, body);

  for (const person of DEMO_PEOPLE) {
    const answer = await platform("PUT", `/internal/chat/users/${person.id}`, {
      display_name: person.display_name,
      avatar_url: person.avatar ? `${images}${person.avatar}` : null,
    });
    expectStatus(answer, [200], `PUT /internal/chat/users/${person.id}`);
  }

  const putListing = async (listing: DemoListing, status: ListingStatus) => {
    const answer = await platform("PUT", `/internal/chat/listings/${listing.id}`, {
      seller_id: listing.seller_id,
      title: listing.title,
      price_minor: listing.price_minor,
      currency: listing.currency,
      image_url: `${images}${listing.image}`,
      url: `${gatewayUrl}/#listing-${listing.id}`,
      status,
    });
    expectStatus(answer, [200], `PUT /internal/chat/listings/${listing.id}`);
  };
  for (const listing of DEMO_LISTINGS) await putListing(listing, listing.status);

  const tokens = new Map<number, string>();
  const tokenOf = async (userId: number) => {
    let token = tokens.get(userId);
    if (!token) {
      const answer = await call<{ access_token: string }>(
        gatewayUrl,
        "POST",
        "/api/dev/token",
        {},
        { user_id: userId },
      );
      expectStatus(answer, [200], "POST /api/dev/token (is DEV_AUTH=1?)");
      token = answer.body.access_token;
      tokens.set(userId, token);
    }
    return token;
  };

  const result: SeedResult = { chats: [], systemMessages: {} };
  for (const spec of DEMO_CHATS) {
    const listing = DEMO_LISTINGS.find((l) => l.id === spec.listing_id);
    if (!listing) throw new SeedError(`demo seed: chat on unknown listing ${spec.listing_id}`);
    const open = () =>
      platform<Chat>("POST", "/internal/chat/chats", { listing_id: spec.listing_id, buyer_id: spec.buyer_id });
    let opened = await open();
    // A removed listing takes no new chats (409 listing_closed): the conversation happened before it was
    // removed, so the seed plays it in that order.
    const replay = opened.status === 409 && listing.status === "removed";
    if (replay) {
      await putListing(listing, "active");
      opened = await open();
    }
    expectStatus(opened, [200, 201], `POST /internal/chat/chats (listing ${spec.listing_id})`);
    const chat = opened.body;
    for (const [index, message] of spec.messages.entries()) {
      const sender = message.from === "buyer" ? spec.buyer_id : listing.seller_id;
      const token = await tokenOf(sender);
      const sent = await call(
        gatewayUrl,
        "POST",
        `/api/v1/chats/${chat.id}/messages`,
        { authorization: `Bearer ${token}` },
        { content: message.content, client_msg_id: `demo-seed-${spec.listing_id}-${index + 1}` },
      );
      // 409 listing_closed: a chat of a removed listing seeded before (its messages are there already).
      expectStatus(sent, [200, 201, 409], `a message in chat ${chat.id}`);
    }
    if (spec.system) {
      const posted = await platform<Message>("POST", `/internal/chat/chats/${chat.id}/messages`, {
        content: spec.system.content,
        data: spec.system.data,
        client_msg_id: `demo-seed-${spec.listing_id}-system`,
      });
      expectStatus(posted, [200, 201], `POST /internal/chat/chats/${chat.id}/messages`);
      result.systemMessages[spec.listing_id] = posted.body;
    }
    if (replay) await putListing(listing, listing.status);
    result.chats.push(chat);
  }
  return result;
}

/** What `npm start` prints after seeding: who to sign in as, and what each sees. */
export function seedSummary(gatewayUrl: string): string[] {
  const name = (id: number) => DEMO_PEOPLE.find((p) => p.id === id)?.display_name ?? `User ${id}`;
  const chatsOf = (id: number) =>
    DEMO_CHATS.filter((c) => c.buyer_id === id || DEMO_LISTINGS.find((l) => l.id === c.listing_id)?.seller_id === id)
      .length;
  return [
    `Demo data (dev only): ${DEMO_LISTINGS.length} listings (active, reserved, sold, removed), ${DEMO_PEOPLE.length} people, ${DEMO_CHATS.length} chats, 1 system message.`,
    `  Open ${gatewayUrl}/ and sign in as:`,
    ...DEMO_PEOPLE.map(
      (p) => `    ${String(p.id).padStart(2)}  ${name(p.id)} (${chatsOf(p.id)} chat${chatsOf(p.id) === 1 ? "" : "s"})`,
    ),
  ];
}
