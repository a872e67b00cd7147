import amqp, { type AmqpConnectionManager } from 'amqp-connection-manager';
import type { Logger } from 'pino';
import type { AppMetrics } from '../metrics.js';

/** Reconnect waits double from 1 s up to this after each failed attempt; a connect resets them. */
const MAX_RECONNECT_SECONDS = 30;

/**
 * A RabbitMQ connection that reconnects by itself (amqp-connection-manager), with a capped
 * exponential backoff. The app opens two: one to consume on, one to publish dead letters on, as
 * RabbitMQ advises, so a publisher blocked by a resource alarm never holds up the consumer's acks.
 *
 * A hung broker (socket open, no frames): amqplib closes a connection that has received nothing in two
 * heartbeat checks, 2–3 × `heartbeatSeconds` after the last frame ("Heartbeat timeout"), and a connect
 * attempt that hears nothing for two intervals is given up too ("connect ETIMEDOUT"), so a reconnect
 * never waits for ever on a broker that accepted the socket and went silent.
 */
export function connectToRabbitmq(
  url: string,
  name: string,
  log: Logger,
  heartbeatSeconds: number,
): AmqpConnectionManager {
  const connection = amqp.connect([url], {
    heartbeatIntervalInSeconds: heartbeatSeconds,
    reconnectTimeInSeconds: 1,
    connectionOptions: {
      // Socket inactivity until the connection is open; amqplib turns it off then.
      timeout: 2 * heartbeatSeconds * 1000,
      // Shown in the RabbitMQ management UI and `rabbitmqctl list_connections client_properties`.
      clientProperties: { connection_name: name },
    },
  });
  // The manager reads reconnectTimeInSeconds after emitting these events, so the wait set here applies.
  const backOff = (message: string, err: Error | undefined) => {
    const retryInSeconds = connection.reconnectTimeInSeconds;
    log.warn({ err: err?.message, connection: name, retryInSeconds }, message);
    connection.reconnectTimeInSeconds = Math.min(retryInSeconds * 2, MAX_RECONNECT_SECONDS);
  };
  connection.on('connect', () => {
    connection.reconnectTimeInSeconds = 1;
    log.info({ connection: name }, 'connected to RabbitMQ');
  });
  connection.on('disconnect', ({ err }) => backOff('disconnected from RabbitMQ', err));
  connection.on('connectFailed', ({ err }) => backOff('cannot reach RabbitMQ; retrying', err));
  return connection;
}

/**
 * Counts each lost connection in `rabbitmq_connections_lost_total{connection}` (the warn line is
 * connectToRabbitmq's), leaving out the reconnects the consumer forces itself.
 */
export function countLostConnections(
  connections: Record<'consuming' | 'publishing', AmqpConnectionManager>,
  metrics: AppMetrics,
): void {
  for (const [role, connection] of Object.entries(connections)) {
    connection.on('disconnect', ({ err }) => {
      if (err?.message !== 'forced reconnect') metrics.rabbitmqConnectionsLost.inc({ connection: role });
    });
  }
}

/**
 * Follows connection.blocked / connection.unblocked (a RabbitMQ resource alarm) on the connections:
 * a warn line, the `rabbitmq_blocked` gauge, and the returned function (for /readyz), all fed by the
 * same state. A new connection starts unblocked; the broker blocks it again if the alarm persists.
 */
export function watchBlocked(
  connections: AmqpConnectionManager[],
  deps: { metrics: AppMetrics; log: Logger },
): () => boolean {
  const blocked = new Set<AmqpConnectionManager>();
  const set = (connection: AmqpConnectionManager, isBlocked: boolean) => {
    if (isBlocked) blocked.add(connection);
    else blocked.delete(connection);
    deps.metrics.rabbitmqBlocked.set(blocked.size > 0 ? 1 : 0);
  };
  for (const connection of connections) {
    connection.on('blocked', ({ reason }) => {
      deps.log.warn({ reason }, 'RabbitMQ blocked a connection (resource alarm): publishing waits');
      set(connection, true);
    });
    connection.on('unblocked', () => {
      deps.log.info('RabbitMQ unblocked the connection');
      set(connection, false);
    });
    connection.on('disconnect', () => set(connection, false));
  }
  return () => blocked.size > 0;
}
