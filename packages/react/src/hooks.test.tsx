// @vitest-environment happy-dom
import { type Attachment, ChatClient } from "@listings-chat/client";
import { FAKE_BASE_URL, FakeChatServer, fakePhoto } from "@listings-chat/client/testing";
import { act, cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { StrictMode, useState } from "react";
import { afterEach, describe, expect, it } from "vitest";
import {
  ChatProvider,
  useAttachmentUrl,
  useChatList,
  useConnection,
  usePresence,
  useThread,
  useTyping,
} from "./hooks.ts";

/**
 * The hooks in a React tree (happy-dom), under StrictMode (effects run twice), against the client's fake
 * server with real timers: what a page built on them draws as events arrive.
 */

const ME = 1;
const OTHER = 2;

afterEach(() => cleanup());

function ChatListView({ onOpen }: { onOpen(id: number): void }) {
  const { chats, status } = useChatList();
  const { mode, unreadTotal } = useConnection();
  return (
    <div>
      <p data-testid="mode">{mode}</p>
      <p data-testid="unread">{unreadTotal}</p>
      <p data-testid="list-status">{status}</p>
      <ul>
        {chats.map((chat) => (
          <li key={chat.id}>
            <button type="button" onClick={() => onOpen(chat.id)}>
              {`chat ${chat.id}: ${chat.last_message?.content ?? "(none)"} [${chat.unread_count}]`}
            </button>
          </li>
        ))}
      </ul>
    </div>
  );
}

function ThreadView({ chatId, peerId }: { chatId: number; peerId: number }) {
  const thread = useThread(chatId);
  const { userIds, setTyping } = useTyping(chatId);
  const online = usePresence(peerId);
  const [draft, setDraft] = useState("");
  return (
    <section>
      <p data-testid="thread-status">{thread.status}</p>
      <p data-testid="typing">{userIds.length > 0 ? `${userIds.join(",")} typing` : ""}</p>
      <p data-testid="online">{online === undefined ? "unknown" : online ? "online" : "offline"}</p>
      <ol data-testid="messages">
        {thread.messages.map((m) => (
          <li key={m.id}>{m.content}</li>
        ))}
        {thread.pending.map((p) => (
          <li key={p.client_msg_id} data-status={p.status}>
            {`${p.content} (${p.status})`}
          </li>
        ))}
      </ol>
      <input
        aria-label="message"
        value={draft}
        onChange={(e) => {
          setDraft(e.target.value);
          setTyping(true);
        }}
      />
      <button
        type="button"
        onClick={() => {
          void thread.send(draft).catch(() => {});
          setDraft("");
        }}
      >
        send
      </button>
    </section>
  );
}

function App({ client }: { client: ChatClient }) {
  const [open, setOpen] = useState<number | null>(null);
  return (
    <StrictMode>
      <ChatProvider client={client}>
        <ChatListView onOpen={setOpen} />
        {open !== null && <ThreadView chatId={open} peerId={OTHER} />}
      </ChatProvider>
    </StrictMode>
  );
}

function setUp() {
  const server = new FakeChatServer();
  const chat = server.addChat(ME, OTHER);
  server.post(chat.id, OTHER, "hello, is the bike still for sale?");
  const client = new ChatClient({
    baseUrl: FAKE_BASE_URL,
    getAccessToken: () => server.accessToken(ME),
    fetch: server.fetch,
    webSocket: server.webSocket,
    userId: ME,
    unreadMinIntervalMs: 0,
    ackTimeoutMs: 300,
  });
  render(<App client={client} />);
  return { server, chat, client };
}

const messages = () => screen.getByTestId("messages").textContent;

describe("the React hooks", () => {
  it("draw the chat list live, then a thread: history, a send shown at once, the other side's answer", async () => {
    const { server, chat, client } = setUp();
    await waitFor(() => expect(screen.getByTestId("mode").textContent).toBe("live"));
    await waitFor(() => expect(screen.getByRole("button", { name: /hello, is the bike/ })).toBeTruthy());
    await waitFor(() => expect(screen.getByTestId("unread").textContent).toBe("1"));

    fireEvent.click(screen.getByRole("button", { name: /chat 1/ }));
    await waitFor(() => expect(screen.getByTestId("thread-status").textContent).toBe("ready"));
    expect(messages()).toContain("hello, is the bike still for sale?");

    // The frame is lost and the REST retry held: the page shows the message as sending until it is stored.
    server.sendAnswer = "drop-frame";
    const hold = server.hold(`/api/v1/chats/${chat.id}/messages`);
    fireEvent.change(screen.getByLabelText("message"), { target: { value: "yes, it is" } });
    fireEvent.click(screen.getByRole("button", { name: "send" }));
    await waitFor(() => expect(messages()).toContain("yes, it is (sending)"));
    await waitFor(() => expect(hold.waiting).toBe(1));
    expect(server.messagesIn(chat.id).map((m) => m.content)).not.toContain("yes, it is");
    server.sendAnswer = "ack";
    hold.release();
    await waitFor(() => expect(server.messagesIn(chat.id).map((m) => m.content)).toContain("yes, it is"));
    await waitFor(() => expect(messages()).not.toContain("(sending)"));
    expect(messages()?.match(/yes, it is/g)).toHaveLength(1);

    // The lost ack counted as a dead socket: wait for the new one.
    await waitFor(() => expect(server.openSockets(ME)).toHaveLength(1));
    await waitFor(() => expect(screen.getByTestId("mode").textContent).toBe("live"));
    act(() => {
      server.post(chat.id, OTHER, "great, can I see it tomorrow?");
      server.pushTo(ME, { type: "typing", chat_id: chat.id, user_id: OTHER, is_typing: true });
      server.pushTo(ME, { type: "presence", user_id: OTHER, online: true });
    });
    await waitFor(() => expect(messages()).toContain("great, can I see it tomorrow?"));
    await waitFor(() => expect(screen.getByTestId("typing").textContent).toBe(`${OTHER} typing`));
    await waitFor(() => expect(screen.getByTestId("online").textContent).toBe("online"));
    await waitFor(() =>
      expect(screen.getByRole("button", { name: /great, can I see it tomorrow\?/ }).textContent).toContain("chat 1"),
    );
    expect(server.sockets.filter((s) => s.readyState === 1)).toHaveLength(1);
    client.stop();
  });
});

function Thumbnail({ attachment }: { attachment: Attachment }) {
  const src = useAttachmentUrl(attachment, { thumb: true });
  return src ? <img alt="" data-testid="thumb" src={src} /> : <span data-testid="thumb-loading" />;
}

function PhotoThread({ chatId }: { chatId: number }) {
  const thread = useThread(chatId);
  return (
    <section>
      <ol>
        {thread.messages.map((m) => (
          <li key={m.id} data-kind={m.kind}>
            {m.attachments.map((a) => (
              <Thumbnail key={a.id} attachment={a} />
            ))}
          </li>
        ))}
        {thread.pending.map((p) => (
          <li key={p.client_msg_id} data-testid="pending-photos" data-progress={p.progress}>
            {`${p.photos?.length ?? 0} photos ${p.status}`}
          </li>
        ))}
      </ol>
      <button type="button" onClick={() => void thread.sendPhotos([fakePhoto()], "as promised").catch(() => {})}>
        send a photo
      </button>
    </section>
  );
}

describe("photos in React", () => {
  it("draw a thread's thumbnails through attachmentUrl, and a photo send as pending until it is stored", async () => {
    const server = new FakeChatServer();
    const chat = server.addChat(ME, OTHER);
    await server.postPhotos(chat.id, OTHER);
    const client = new ChatClient({
      baseUrl: FAKE_BASE_URL,
      getAccessToken: () => server.accessToken(ME),
      fetch: server.fetch,
      webSocket: server.webSocket,
      userId: ME,
    });
    render(
      <StrictMode>
        <ChatProvider client={client}>
          <PhotoThread chatId={chat.id} />
        </ChatProvider>
      </StrictMode>,
    );
    await waitFor(() => expect(screen.getAllByTestId("thumb")).toHaveLength(1));
    expect(screen.getByTestId("thumb").getAttribute("src")).toMatch(
      new RegExp(`^${FAKE_BASE_URL}/files/thumbs/upload-1\\?`),
    );
    // StrictMode mounts twice; the client asks the gateway once.
    expect(server.requestsTo("GET", "/api/v1/attachments/upload-1")).toHaveLength(1);

    const hold = server.hold("/files/uploads/upload-2");
    fireEvent.click(screen.getByRole("button", { name: "send a photo" }));
    await waitFor(() => expect(screen.getByTestId("pending-photos").textContent).toBe("1 photos sending"));
    expect(screen.getByTestId("pending-photos").dataset.progress).toBe("0");
    await waitFor(() => expect(hold.waiting).toBe(1));
    hold.release();
    await waitFor(() => expect(screen.getAllByTestId("thumb")).toHaveLength(2));
    expect(screen.queryByTestId("pending-photos")).toBeNull();
    expect(server.messagesIn(chat.id).map((m) => [m.kind, m.content])).toEqual([
      ["image", ""],
      ["image", "as promised"],
    ]);
    client.stop();
  });
});
