import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { answerBalances, type BalancesRoute } from './balances-route.js';

/** What start-up is still waiting for, or, once started, each check's verdict and why failing ones fail. */
export type Readiness =
  { waitingFor: string } | { checks: Record<string, boolean>; reasons: Record<string, string> };

export interface HttpDeps {
  /** The interface to listen on (HTTP_HOST); unset: every interface. */
  host?: string | undefined;
  registry: Registry;
  /** /readyz answers 200 only when start-up is done and every check is true. */
  readiness: () => Readiness;
  /** Where the Temporal Runtime serves its own Prometheus metrics, appended to /metrics. */
  temporalMetricsUrl?: string | undefined;
  /** GET /balances (balance history); without it (BALANCES_API_TOKEN unset) the path is 404. */
  balances?: BalancesRoute | undefined;
}

/**
 * /healthz (process alive), /readyz (start-up done, dependencies connected, worker running), /metrics,
 * and /balances when given.
 * Rejects with the listen error (EADDRINUSE when the port is taken).
 */
export async function startHttpServer(
  port: number,
  deps: HttpDeps,
): Promise<{ server: Server; port: number }> {
  const renderMetrics = sharedByConcurrentCallers(async () => {
    const own = await deps.registry.metrics();
    const temporal = deps.temporalMetricsUrl ? await fetchText(deps.temporalMetricsUrl) : '';
    return `${own}\n${temporal}`;
  });
  const server = createServer((request, response) => {
    const send = (status: number, contentType: string, body: string) => {
      response.writeHead(status, { 'content-type': contentType });
      response.end(body);
    };
    const path = request.url?.split('?')[0];
    const respond = async () => {
      if (path === '/healthz') return send(200, 'application/json', '{"status":"ok"}');
      if (path === '/readyz') {
        const readiness = deps.readiness();
        if ('waitingFor' in readiness) {
          return send(503, 'application/json', JSON.stringify({ ready: false, ...readiness }));
        }
        const ready = Object.values(readiness.checks).every(Boolean);
        // `reasons` only when something fails, e.g. {"keydb": "no reply to PING within 1 s (…)"}.
        const { checks, reasons } = readiness;
        const body = ready ? { ready, checks } : { ready, checks, reasons };
        return send(ready ? 200 : 503, 'application/json', JSON.stringify(body));
      }
      if (path === '/metrics') return send(200, deps.registry.contentType, await renderMetrics());
      if (path === '/balances' && deps.balances) {
        const { status, body, headers } = await answerBalances(request, deps.balances);
        response.writeHead(status, { 'content-type': 'application/json', ...headers });
        return void response.end(body);
      }
      send(404, 'text/plain', 'not found');
    };
    respond().catch((error: unknown) => send(500, 'text/plain', (error as Error).message));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, deps.host, resolve);
  });
  return { server, port: (server.address() as AddressInfo).port };
}

/**
 * At most one `render` at a time, each answer rendered after its caller asked: callers that arrive
 * while one runs share the next one. A flood of /metrics scrapes then costs the event loop one
 * rendering at a time (collecting the default metrics reads /proc synchronously), not one per scrape,
 * and the minute's KeyDB write is not queued behind a hundred of them.
 */
function sharedByConcurrentCallers(render: () => Promise<string>): () => Promise<string> {
  let running: Promise<string> | undefined;
  let next: Promise<string> | undefined;
  const start = () => {
    const rendering = render().finally(() => {
      if (running === rendering) running = undefined;
    });
    running = rendering;
    return rendering;
  };
  return () => {
    if (!running) return start();
    next ??= running
      .catch(() => undefined)
      .then(() => {
        next = undefined;
        return start();
      });
    return next;
  };
}

async function fetchText(url: string): Promise<string> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return response.ok ? await response.text() : '';
  } catch {
    return '';
  }
}
