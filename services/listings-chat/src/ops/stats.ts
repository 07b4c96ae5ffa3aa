/** Counters behind `/internal/chat/ws/stats` and `/metrics`; one object per instance, passed in. */
export interface Stats {
  connectionsTotal: number;
  disconnectionsTotal: number;
  /** Frames received from clients. */
  messagesReceivedTotal: number;
  /** Frames written to clients. */
  messagesSentTotal: number;
  /** Requests to `/api/…` answered (users' REST: sends, pages, polling). */
  apiRequestsTotal: number;
  /** Events and ephemeral frames fanned out to sockets (one per event, however many sockets). */
  broadcastsTotal: number;
  errorsTotal: number;
  rateLimitedTotal: number;
  /** Writes (any bucket) counted by this instance alone because Redis did not answer (the limits failed open to per instance). */
  sendLimitLocalTotal: number;
  slowConsumerDisconnectsTotal: number;
  /** Upgrades refused at once with 503 `instance_busy` (admission: CONNECT_QUEUE_MAX greetings pending). */
  upgradesRefusedBusyTotal: number;
}

export const createStats = (): Stats => ({
  connectionsTotal: 0,
  disconnectionsTotal: 0,
  messagesReceivedTotal: 0,
  messagesSentTotal: 0,
  apiRequestsTotal: 0,
  broadcastsTotal: 0,
  errorsTotal: 0,
  rateLimitedTotal: 0,
  sendLimitLocalTotal: 0,
  slowConsumerDisconnectsTotal: 0,
  upgradesRefusedBusyTotal: 0,
});
