import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const RULES = 'deploy/prometheus/alerts.yml';
const RULE_TESTS = 'deploy/prometheus/alerts.test.yml';
const read = (path: string) => readFileSync(`${root}/${path}`, 'utf8');

/** deploy/prometheus, checked by the same promtool CI runs (scripts/ensure-promtool.sh). */
describe('the Prometheus alerting rules', () => {
  let promtool: string;
  const run = (...args: string[]) => {
    const result = spawnSync(promtool, args, { cwd: root, encoding: 'utf8' });
    return { status: result.status, output: `${result.stdout}${result.stderr}` };
  };

  beforeAll(() => {
    promtool = execFileSync('bash', [`${root}/scripts/ensure-promtool.sh`], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }).trim();
  }, 300_000);

  it('pass `promtool check config` on the compose Prometheus config, which loads them', () => {
    const { status, output } = run('check', 'config', 'deploy/prometheus/prometheus.yml');
    expect(output).toMatch(/SUCCESS: \d+ rules found/);
    expect(status).toBe(0);
  });

  it('pass their unit tests (`promtool test rules`)', () => {
    const { status, output } = run('test', 'rules', RULE_TESTS);
    expect(output).toContain('SUCCESS');
    expect(status).toBe(0);
  });

  it('each have a unit test in which they fire, and a summary and description', () => {
    const alerts = [...read(RULES).matchAll(/^\s+- alert: (\S+)$/gm)].map((match) => match[1]);
    const firing = read(RULE_TESTS)
      .split('- eval_time:')
      .filter((check) => !/exp_alerts: \[\]/.test(check))
      .map((check) => /alertname: (\S+)/.exec(check)?.[1]);
    expect(alerts.length).toBeGreaterThan(20);
    expect(alerts.filter((alert) => !firing.includes(alert))).toEqual([]);
    const rules = read(RULES)
      .split(/^\s+- alert: /m)
      .slice(1);
    expect(rules.filter((rule) => !/summary: .+\n\s+description: >-\n/.test(rule))).toEqual([]);
  });

  it('name only balance_sync_ metrics that createMetrics() registers', async () => {
    const registered = (await createMetrics().registry.getMetricsAsJSON()).map((metric) => metric.name);
    const named = new Set(
      [...read(RULES).matchAll(/\bbalance_sync_\w+/g)].map((match) =>
        match[0].replace(/_(bucket|sum|count)$/, ''),
      ),
    );
    const unknown = [...named].filter((name) => !registered.includes(name));
    expect(unknown.sort()).toEqual([]);
  });
});
