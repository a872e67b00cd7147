import type { MessageProperties, Options } from 'amqplib';

/**
 * Publish options that keep a consumed message's properties, persistent, with the given headers.
 * Used for dead letters and for replaying them, so a message survives the round trip unchanged.
 */
export function republishOptions(
  properties: MessageProperties,
  headers: Record<string, unknown>,
): Options.Publish {
  return {
    contentType: properties.contentType as string | undefined,
    contentEncoding: properties.contentEncoding as string | undefined,
    messageId: properties.messageId as string | undefined,
    correlationId: properties.correlationId as string | undefined,
    replyTo: properties.replyTo as string | undefined,
    timestamp: properties.timestamp as number | undefined,
    type: properties.type as string | undefined,
    appId: properties.appId as string | undefined,
    priority: properties.priority as number | undefined,
    persistent: true,
    headers,
  };
}
