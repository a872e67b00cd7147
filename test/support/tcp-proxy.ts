import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';

/** One client connection and, once it forwards, its connection to the server. */
interface Pair {
  client: Socket;
  upstream: Socket | undefined;
  /** The first bytes the client sent (an AMQP client names its connection in them). */
  hello: Buffer;
  frozen: boolean;
  /** Replies from the server are thrown away (the requests still reach it). */
  deaf: boolean;
}

export interface TcpProxy {
  port: number;
  /** Connections accepted so far (closed ones too), each with the start of what the client sent. */
  connections(): { hello: string; frozen: boolean }[];
  /**
   * A hung server with its sockets open: nothing passes either way on the connections whose client
   * hello matches (all by default), and nothing is read from their sockets, so a close by either end
   * goes unnoticed. Without a filter, connections accepted from now on hear nothing either, as a
   * frozen server's kernel still accepts connections.
   */
  freeze(matches?: (hello: string) => boolean): number;
  /**
   * New connections are forwarded again. `frozen: 'resume'` also forwards what the frozen ones hold
   * (a SIGSTOPped server getting SIGCONT); `'keep'` leaves them silent for good (a black hole).
   */
  thaw(frozen: 'resume' | 'keep'): void;
  /**
   * Lost replies: from now on every connection's requests still reach the server, and whatever the
   * server answers is thrown away. `false` ends it and closes those connections (their streams are
   * broken mid-frame), so clients reconnect through the proxy.
   */
  dropReplies(on: boolean): void;
  /**
   * A reply lost after its request landed: from now on, a connection that sends a request matching
   * `matches` hears nothing more (as with dropReplies(true), which ends it with `false`).
   */
  dropRepliesAfter(matches: (request: string) => boolean): void;
  close(): Promise<void>;
}

const HELLO_BYTES = 4096;

/**
 * A TCP proxy to 127.0.0.1:`port`. `splitClientWrites` forwards what clients send that many bytes at
 * a time, 1 ms apart (replies pass straight back), so the server reads each request in many pieces.
 */
export async function startTcpProxy(
  port: number,
  options: { splitClientWrites?: number } = {},
): Promise<TcpProxy> {
  const pairs: Pair[] = [];
  let freezeNew = false;
  let deafNew = false;
  let deafAfter: ((request: string) => boolean) | undefined;

  const connectUpstream = (pair: Pair) => {
    // No Nagle: each piece leaves at once, 1 ms apart, instead of waiting for an ACK and being
    // coalesced with the rest (which would hand the server the whole request in one read).
    const upstream = createConnection({ host: '127.0.0.1', port, noDelay: true });
    pair.upstream = upstream;
    upstream.on('error', () => undefined);
    upstream.on('data', (data: Buffer) => {
      if (!pair.deaf) pair.client.write(data);
    });
    upstream.on('close', () => {
      if (!pair.frozen) pair.client.destroy();
    });
    let sending = Promise.resolve();
    pair.client.on('data', (data: Buffer) => {
      if (deafAfter?.(data.toString('latin1'))) pair.deaf = true;
      const split = options.splitClientWrites;
      if (!split) {
        upstream.write(data);
        return;
      }
      sending = sending.then(async () => {
        for (let i = 0; i < data.length; i += split) {
          upstream.write(data.subarray(i, i + split));
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
      });
    });
    pair.client.resume();
  };

  const server = createServer({ pauseOnConnect: true }, (client) => {
    const pair: Pair = {
      client,
      upstream: undefined,
      hello: Buffer.alloc(0),
      frozen: freezeNew,
      deaf: deafNew,
    };
    pairs.push(pair);
    client.on('error', () => undefined);
    client.on('data', (data: Buffer) => {
      if (pair.hello.length < HELLO_BYTES)
        pair.hello = Buffer.concat([pair.hello, data]).subarray(0, HELLO_BYTES);
    });
    client.on('close', () => {
      if (!pair.frozen) pair.upstream?.destroy();
    });
    if (!pair.frozen) connectUpstream(pair);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

  return {
    port: (server.address() as AddressInfo).port,
    connections: () => pairs.map((pair) => ({ hello: pair.hello.toString('latin1'), frozen: pair.frozen })),
    freeze(matches) {
      if (!matches) freezeNew = true;
      let frozen = 0;
      for (const pair of pairs) {
        if (pair.frozen || pair.client.destroyed) continue;
        if (matches && !matches(pair.hello.toString('latin1'))) continue;
        pair.frozen = true;
        pair.client.pause();
        pair.upstream?.pause();
        frozen++;
      }
      return frozen;
    },
    thaw(frozen) {
      freezeNew = false;
      if (frozen === 'keep') return;
      for (const pair of pairs) {
        if (!pair.frozen) continue;
        pair.frozen = false;
        if (pair.client.destroyed) {
          pair.upstream?.destroy();
          continue;
        }
        if (!pair.upstream) connectUpstream(pair);
        pair.client.resume();
        pair.upstream?.resume();
      }
    },
    dropRepliesAfter(matches) {
      deafAfter = matches;
    },
    dropReplies(on) {
      deafNew = on;
      if (!on) deafAfter = undefined;
      for (const pair of pairs) {
        if (on) pair.deaf = true;
        else if (pair.deaf) {
          pair.client.destroy();
          pair.upstream?.destroy();
        }
      }
    },
    close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream?.destroy();
      }
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
