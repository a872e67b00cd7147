import amqp, { type AmqpConnectionManager } from 'amqp-connection-manager';
import type { Logger } from 'pino';

/**
 * The process's one RabbitMQ connection, reconnecting by itself (amqp-connection-manager). The bridge
 * consumes on it and activities publish dead letters on it, each on its own channel.
 */
export function connectToRabbitmq(url: string, name: string, log: Logger): AmqpConnectionManager {
  const connection = amqp.connect([url], {
    heartbeatIntervalInSeconds: 5,
    reconnectTimeInSeconds: 1,
    // Shown in the RabbitMQ management UI and `rabbitmqctl list_connections client_properties`.
    connectionOptions: { clientProperties: { connection_name: name } },
  });
  connection.on('connect', () => log.info('connected to RabbitMQ'));
  connection.on('disconnect', ({ err }) => log.warn({ err: err?.message }, 'disconnected from RabbitMQ'));
  connection.on('connectFailed', ({ err }) =>
    log.warn({ err: err?.message }, 'cannot reach RabbitMQ; retrying'),
  );
  return connection;
}
