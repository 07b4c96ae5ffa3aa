/**
 * The gateway's relay alone (bench/bare-relay.ts starts it): accepts on a free loopback port, joins each
 * accepted socket to a new connection to the upstream port given as the argument, and prints its port.
 */
import { connect, createServer } from "node:net";
import { destroyOnError, relay } from "../services/gateway/src/proxy/relay.ts";

const upstreamPort = Number(process.argv[2]);
const server = createServer((client) => {
  const upstream = connect({ port: upstreamPort, host: "127.0.0.1", noDelay: true });
  client.setNoDelay(true);
  client.on("error", destroyOnError);
  upstream.on("error", destroyOnError);
  client.once("close", () => upstream.destroy());
  upstream.once("close", () => client.destroy());
  relay(client, upstream);
});
server.listen(0, "127.0.0.1", () => console.log((server.address() as { port: number }).port));
