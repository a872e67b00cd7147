import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createHealth, type Health } from '../../src/health.js';
import { createMetrics } from '../../src/metrics.js';
import { waitFor } from '../support/harness.js';

describe('the health state behind /readyz and balance_sync_dependency_up', () => {
  let health: Health | undefined;
  afterEach(async () => await health?.stop());

  const setUp = () => {
    const metrics = createMetrics();
    const logged: { level: number; msg: string }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line)) });
    health = createHealth(metrics, log, { intervalMs: 20, timeoutMs: 100 });
    const up = async (dependency: string) =>
      (await metrics.dependencyUp.get()).values.find((v) => v.labels.dependency === dependency)?.value;
    return { health, logged, up };
  };

  it('fails a check that does not answer within its timeout, with that reason, on /readyz and the gauge alike', async () => {
    const { health, logged, up } = setUp();
    let hung = false;
    health.add('keydb', () => (hung ? new Promise<void>(() => undefined) : Promise.resolve()), 'keydb');
    health.add('postgres', () => Promise.reject(new Error('connection refused')), 'postgres');
    health.add('rabbitmq', () => undefined);
    await health.start();
    expect(health.state()).toEqual({
      checks: { keydb: true, postgres: false, rabbitmq: true },
      reasons: { postgres: 'connection refused' },
    });
    expect([await up('keydb'), await up('postgres')]).toEqual([1, 0]);

    hung = true;
    await waitFor('keydb failing', () => Promise.resolve(health.state()!.checks.keydb ? undefined : true));
    expect(health.state()!.reasons.keydb).toBe('no answer within 0.1 s');
    expect(await up('keydb')).toBe(0);
    hung = false;
    await waitFor('keydb ready again', () => Promise.resolve(health.state()!.checks.keydb || undefined));
    expect(await up('keydb')).toBe(1);
    // One line per change, not per round; failing from the first round: said at info, warned a round later.
    const lines = (check: string) =>
      logged.filter((l) => l.msg.includes(`${check}:`) || l.msg.endsWith(check)).map((l) => [l.level, l.msg]);
    expect(lines('keydb')).toEqual([
      [40, 'not ready: keydb: no answer within 0.1 s'],
      [30, 'ready again: keydb'],
    ]);
    expect(lines('postgres')).toEqual([
      [30, 'not ready yet: postgres: connection refused'],
      [40, 'not ready: postgres: connection refused'],
    ]);
  });

  it('says a check that fails only at start-up (the consumer not started yet) at info, with no warning', async () => {
    const { health, logged } = setUp();
    let consuming = false;
    health.add('rabbitmq', () => (consuming ? undefined : 'not consuming'), 'rabbitmq');
    await health.start();
    expect(health.state()!.checks.rabbitmq).toBe(false);
    consuming = true;
    await waitFor('rabbitmq ready', () => Promise.resolve(health.state()!.checks.rabbitmq || undefined));
    consuming = false;
    await waitFor('rabbitmq failing', () =>
      Promise.resolve(health.state()!.checks.rabbitmq ? undefined : true),
    );
    expect(logged.map((l) => [l.level, l.msg])).toEqual([
      [30, 'not ready yet: rabbitmq: not consuming'],
      [40, 'not ready: rabbitmq: not consuming'],
    ]);
  });

  it('reads a synchronous check (an in-process flag) whenever the state is read, not a round late', async () => {
    const metrics = createMetrics();
    health = createHealth(metrics, pino({ level: 'silent' }), { intervalMs: 60_000, timeoutMs: 100 });
    let consuming = true;
    health.add('rabbitmq', () => (consuming ? undefined : 'not consuming'), 'rabbitmq');
    await health.start();
    consuming = false;
    expect(health.state()).toEqual({ checks: { rabbitmq: false }, reasons: { rabbitmq: 'not consuming' } });
    expect((await metrics.dependencyUp.get()).values).toMatchObject([{ value: 0 }]);
    consuming = true;
    expect(health.state()).toEqual({ checks: { rabbitmq: true }, reasons: {} });
  });

  it('has no state before its first round', () => {
    const { health } = setUp();
    health.add('x', () => undefined);
    expect(health.state()).toBeUndefined();
  });
});
