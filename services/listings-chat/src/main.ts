import { runService } from "@listings-chat/shared/node";
import { loadChatConfig } from "./env.ts";
import { startChatServer } from "./server.ts";

await runService({
  name: "listings-chat",
  loadConfig: () => loadChatConfig(process.env),
  start: startChatServer,
  portVariable: "CHAT_PORT",
  stoppingMessage: "shutting down: closing sockets with 1001",
});
