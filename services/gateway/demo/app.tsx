/**
 * The demo chat page (development only), built as a monolith's React frontend would be: `@listings-chat/client`
 * for the connection and `@listings-chat/react` for the state, nothing else. Bundled by the gateway with esbuild
 * (src/dev/demo-page.ts).
 *
 * Rule of the page: text from users (message content, previews) is only ever rendered as React text; nothing
 * here sets HTML.
 *
 * `window.chatDemo` exposes what the page received (every event id, in order, and any anomaly it saw) so that
 * tests and curious developers can check the client's "exactly once, in order" from the outside.
 *
 * Safety (CONTRACT §10): a chat, the other person and each of their messages can be reported (inline forms, no
 * dialogs); the other person can be blocked and unblocked. A user who is blocked is told nothing until a send is
 * refused `blocked`. The platform's voice (CONTRACT §8): listings, names and avatars, system messages, archive,
 * suspension and removed listings, said in words.
 */
import { ChatClient, type ChatClientMode, type ChatEvent } from "@listings-chat/client";
import { ChatProvider, useChatStore, useConnection } from "@listings-chat/react";
import { type FormEvent, useCallback, useEffect, useMemo, useState } from "react";
import { createRoot } from "react-dom/client";
import { ChatView } from "./chat-view.tsx";
import { describe, IdField, PageContext, type PageState, SUSPENDED_TEXT } from "./parts.tsx";
import { Sidebar } from "./sidebar.tsx";

const SESSION_KEY = "listings-chat-demo";

const MODE_LABELS: Record<ChatClientMode, string> = {
  connecting: "connecting…",
  live: "live",
  polling: "polling every 5 s",
  offline: "offline",
};

// ---------------------------------------------------------------------------------------------------
// What the page received, for tests (and for anyone debugging the client)

interface DemoDebug {
  /** Every `event` the client handed to the page, in order; `chat_id` absent on `user_blocked` / `user_unblocked`. */
  events: { event_id: number; type: ChatEvent["type"]; chat_id?: number; message_id?: number }[];
  /** Anything the page saw that the client promised not to do (an event twice or out of order). */
  anomalies: string[];
  /** Every mode change, with the time it happened. */
  modes: { to: ChatClientMode; at: number }[];
  /** New access tokens the client asked for (refused or expiring). */
  tokenRefreshes: number;
}
const debug: DemoDebug = { events: [], anomalies: [], modes: [], tokenRefreshes: 0 };
(window as unknown as { chatDemo: DemoDebug }).chatDemo = debug;

function record(event: ChatEvent) {
  const last = debug.events.at(-1);
  if (last && event.event_id <= last.event_id) {
    const anomaly = `event ${event.event_id} (${event.type}) delivered after event ${last.event_id}`;
    debug.anomalies.push(anomaly);
    console.error(`chat demo: ${anomaly}: the client promised every event once, in order`);
  }
  const chatId =
    event.type === "chat_created" || event.type === "chat_updated"
      ? event.chat.id
      : "chat_id" in event
        ? event.chat_id
        : undefined;
  const messageId =
    event.type === "message_read" ? event.message_id : "message" in event ? event.message.id : undefined;
  debug.events.push({ event_id: event.event_id, type: event.type, chat_id: chatId, message_id: messageId });
}

// ---------------------------------------------------------------------------------------------------
// Signing in

/**
 * The gateway's public root as the page was served from it: its origin, and its BASE_PATH when it has one
 * (the page is `<BASE_PATH>/`), so that the page works under a prefix as at the root.
 */
const GATEWAY_ROOT = new URL(".", location.href).href.replace(/\/$/, "");

async function devToken(userId: number): Promise<string> {
  const res = await fetch(`${GATEWAY_ROOT}/api/dev/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: userId }),
  });
  const body = (await res.json().catch(() => undefined)) as
    | { access_token?: string; error?: { message?: string } }
    | undefined;
  if (!res.ok || typeof body?.access_token !== "string") {
    throw new Error(body?.error?.message ?? `POST /api/dev/token answered ${res.status}`);
  }
  return body.access_token;
}

/** `?send_max_age_ms=N` (1 s to 10 min): how long a send may take before the page offers retry or discard. */
function sendMaxAgeFromQuery(): number | undefined {
  const raw = Number(new URLSearchParams(location.search).get("send_max_age_ms"));
  return Number.isInteger(raw) && raw >= 1_000 && raw <= 600_000 ? raw : undefined;
}

interface Session {
  /** One per sign-in: the provider is keyed by it (a provider holds one client for its life). */
  id: number;
  userId: number;
  client: ChatClient;
}
let sessions = 0;

/** A client for the user, as a monolith's page would make one: the token it holds, a new one when asked. */
function startSession(userId: number, firstToken: string, onFatal: (message: string) => void): Session {
  let token = firstToken;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ userId, token }));
  const client = new ChatClient({
    baseUrl: GATEWAY_ROOT,
    // Refused or expiring (DEV_TOKEN_TTL_S=5 shows it): a new dev token, kept for a reload of this tab.
    getAccessToken: async ({ refresh }) => {
      if (refresh) {
        token = await devToken(userId);
        debug.tokenRefreshes += 1;
        sessionStorage.setItem(SESSION_KEY, JSON.stringify({ userId, token }));
      }
      return token;
    },
    sendMaxAgeMs: sendMaxAgeFromQuery(),
    userId,
    // The tabs of one browser share one connection: a user with a dozen tabs holds one socket, not twelve.
    shareAcrossTabs: true,
  });
  client.on("event", record);
  client.on("mode", ({ to }) => debug.modes.push({ to, at: Date.now() }));
  client.on("fatal", ({ message }) => onFatal(message));
  sessions += 1;
  return { id: sessions, userId, client };
}

function SignIn({ onSignIn }: { onSignIn(userId: number): void }) {
  const [value, setValue] = useState("");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    onSignIn(Number(value));
  };
  return (
    <section className="sign-in" data-testid="sign-in">
      <form data-testid="sign-in-form" onSubmit={submit}>
        <IdField label="User id" name="user_id" testId="sign-in-user" value={value} onChange={setValue} />
        <button type="submit" data-testid="sign-in-submit">
          Sign in
        </button>
      </form>
      <p className="muted">
        Development only: <code>POST /api/dev/token</code> signs an access token for any user id, standing in for the
        monolith's sign-in. Open a second window (or a private one) to be the other participant.
      </p>
      <p className="muted" data-testid="sign-in-seed">
        <code>npm start</code> seeds a few listings and people: sign in as 1 (Anna Keller, a buyer) or 7 (Marco Rossi, a
        seller).
      </p>
    </section>
  );
}

// ---------------------------------------------------------------------------------------------------
// The signed-in page

/** The header's state and the banners; the body's `data-mode` and `data-suspended` follow the client. */
function ConnectionParts({ userId, onSignOut }: { userId: number; onSignOut(): void }) {
  const { mode, warning, suspended, unreadTotal, retryNow } = useConnection();
  useEffect(() => {
    document.body.dataset.mode = mode;
    document.body.dataset.suspended = String(suspended);
  }, [mode, suspended]);
  return (
    <>
      <header className="topbar">
        <h1>
          listings-chat <span className="muted">demo</span>
        </h1>
        <span className="mode" data-testid="mode">
          {MODE_LABELS[mode]}
        </span>
        <span className="me" data-testid="me">{`signed in as user ${userId}`}</span>
        <span className="badge" data-testid="unread-total" title="unread messages" hidden={unreadTotal === 0}>
          {unreadTotal}
        </span>
        <button type="button" data-testid="sign-out" onClick={onSignOut}>
          Sign out
        </button>
      </header>
      {/* The polling banner, unless it is the suspension that makes the client poll. */}
      <div className="banner" data-testid="fallback-banner" hidden={suspended || !warning}>
        <span role="status" aria-live="polite" data-testid="fallback-text">
          {warning ?? ""}
        </span>
        <button type="button" data-testid="retry-now" onClick={retryNow}>
          Retry now
        </button>
      </div>
      <div className="banner suspended" role="alert" data-testid="suspended-banner" hidden={!suspended}>
        {suspended ? SUSPENDED_TEXT : ""}
      </div>
    </>
  );
}

/** A set kept in React state, with a setter that adds or removes one item. */
function useSetState<T>(): [ReadonlySet<T>, (item: T, present: boolean) => void] {
  const [set, setSet] = useState<ReadonlySet<T>>(() => new Set());
  const change = useCallback((item: T, present: boolean) => {
    setSet((now) => {
      if (now.has(item) === present) return now;
      const next = new Set(now);
      if (present) next.add(item);
      else next.delete(item);
      return next;
    });
  }, []);
  return [set, change];
}

function Workspace({
  userId,
  error,
  showError,
  onSignOut,
}: {
  userId: number;
  error: string | null;
  showError(text: string | null): void;
  onSignOut(): void;
}) {
  const store = useChatStore();
  const [openChatId, setOpenChatId] = useState<number | null>(null);
  const [reported, setReported] = useSetState<string>();
  const [refusedBy, setRefusedBy] = useSetState<number>();
  const [closedChats, setChatClosed] = useSetState<number>();
  const page = useMemo<PageState>(
    () => ({
      userId,
      showError,
      reported,
      markReported: (key) => setReported(key, true),
      refusedBy,
      setRefusedBy,
      closedChats,
      setChatClosed,
    }),
    [userId, showError, reported, setReported, refusedBy, setRefusedBy, closedChats, setChatClosed],
  );
  useEffect(() => {
    store.loadBlocks().catch((e: unknown) => showError(`could not read whom you block: ${describe(e)}`));
    const offs = [
      // Someone who blocks this user cannot write to them: a message from them means the block is gone.
      store.client.on("event", (event) => {
        if (event.type === "new_message" && event.message.sender_id !== null)
          setRefusedBy(event.message.sender_id, false);
      }),
      // The platform registered the listing again as not removed: sends may go again.
      store.client.on("chat", (chat) => {
        if (chat.listing?.status !== "removed") setChatClosed(chat.id, false);
      }),
    ];
    return () => {
      for (const off of offs) off();
    };
  }, [store, showError, setRefusedBy, setChatClosed]);
  return (
    <PageContext.Provider value={page}>
      <ConnectionParts userId={userId} onSignOut={onSignOut} />
      <ErrorLine text={error} />
      <main>
        <section className="workspace" data-testid="workspace">
          <Sidebar openChatId={openChatId} onSelect={setOpenChatId} />
          {openChatId === null ? (
            <p className="placeholder muted" data-testid="chat-placeholder">
              Select a chat, or contact a seller about a listing.
            </p>
          ) : (
            <ChatView key={openChatId} chatId={openChatId} />
          )}
        </section>
      </main>
    </PageContext.Provider>
  );
}

function ErrorLine({ text }: { text: string | null }) {
  return (
    <p className="error" role="alert" data-testid="error" hidden={text === null}>
      {text ?? ""}
    </p>
  );
}

function App() {
  const [session, setSession] = useState<Session | null>(null);
  const [error, setError] = useState<string | null>(null);
  const showError = useCallback((text: string | null) => setError(text), []);

  const signOut = useCallback((why?: string) => {
    sessionStorage.removeItem(SESSION_KEY);
    setSession((now) => {
      now?.client.stop();
      return null;
    });
    document.body.dataset.mode = "offline";
    delete document.body.dataset.suspended;
    setError(why ?? null);
  }, []);

  const begin = useCallback(
    (userId: number, token: string) => {
      setError(null);
      setSession(startSession(userId, token, (message) => signOut(`signed out: ${message}`)));
    },
    [signOut],
  );

  // A reload keeps the user signed in (this tab only).
  useEffect(() => {
    const saved = sessionStorage.getItem(SESSION_KEY);
    if (!saved) return;
    try {
      const { userId, token } = JSON.parse(saved) as { userId: number; token: string };
      begin(userId, token);
    } catch {
      sessionStorage.removeItem(SESSION_KEY);
    }
  }, [begin]);

  const signIn = (userId: number) => {
    if (!Number.isSafeInteger(userId) || userId < 1) return setError("a user id is a positive whole number");
    devToken(userId).then(
      (token) => begin(userId, token),
      (e: unknown) => setError(`could not sign in: ${describe(e)}`),
    );
  };

  if (!session) {
    return (
      <>
        <header className="topbar">
          <h1>
            listings-chat <span className="muted">demo</span>
          </h1>
          <span className="mode" data-testid="mode">
            signed out
          </span>
          <span className="me" data-testid="me" />
        </header>
        <ErrorLine text={error} />
        <main>
          <SignIn onSignIn={signIn} />
        </main>
      </>
    );
  }
  return (
    <ChatProvider key={session.id} client={session.client}>
      <Workspace userId={session.userId} error={error} showError={showError} onSignOut={() => signOut()} />
    </ChatProvider>
  );
}

const root = document.getElementById("root");
if (!root) throw new Error("the demo page has no #root");
createRoot(root).render(<App />);
