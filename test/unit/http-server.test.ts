import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Gauge, Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { startHttpServer } from '../../src/http/server.js';
import { waitFor } from '../support/harness.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

const serve = async (deps: Partial<Parameters<typeof startHttpServer>[1]> = {}) => {
  const started = await startHttpServer(0, {
    registry: new Registry(),
    readiness: () => ({ waitingFor: 'nothing' }),
    ...deps,
  });
  servers.push(started.server);
  return started;
};

describe('HTTP server', () => {
  it('listens on every interface by default, and only on loopback with host 127.0.0.1', async () => {
    const all = (await serve()).server.address() as AddressInfo;
    expect(['::', '0.0.0.0']).toContain(all.address);
    const loopback = (await serve({ host: '127.0.0.1' })).server.address() as AddressInfo;
    expect(loopback.address).toBe('127.0.0.1');
  });

  it('renders /metrics twice for 100 concurrent scrapes, each answer rendered after its scrape arrived', async () => {
    // The Temporal Runtime's exporter: it holds the first request (a rendering in progress) until
    // released, and answers every later one at once.
    let exporterRequests = 0;
    let releaseFirst: (() => void) | undefined;
    const exporter = createServer((_request, response) => {
      const answer = () => response.end('temporal_sample 1\n');
      if (++exporterRequests === 1) releaseFirst = answer;
      else answer();
    });
    servers.push(exporter);
    await new Promise<void>((resolve) => exporter.listen(0, '127.0.0.1', resolve));
    const registry = new Registry();
    const gauge = new Gauge({ name: 'flood_gauge', help: 'set by the test', registers: [registry] });
    gauge.set(1);
    const { server, port } = await serve({
      registry,
      temporalMetricsUrl: `http://127.0.0.1:${(exporter.address() as AddressInfo).port}/metrics`,
    });
    let arrived = 0;
    server.on('request', () => arrived++);
    const scrape = () => fetch(`http://127.0.0.1:${port}/metrics`).then((response) => response.text());
    const first = scrape();
    const release = await waitFor('the first rendering at the exporter', () => Promise.resolve(releaseFirst));
    gauge.set(2);
    const flood = Array.from({ length: 99 }, scrape);
    await waitFor('99 more scrapes arrived', () => Promise.resolve(arrived === 100 ? true : undefined));
    release();
    expect(await first).toMatch(/^flood_gauge 1$/m);
    for (const text of await Promise.all(flood)) {
      expect(text).toMatch(/^flood_gauge 2$/m);
      expect(text).toMatch(/^temporal_sample 1$/m);
    }
    expect(exporterRequests).toBe(2);
  });
});
