import amqplib, { type Channel, type ChannelModel, type GetMessage } from 'amqplib';
import type pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import { REASON_CODE_HEADER, REASON_HEADER } from '../../src/bridge/dead-letter.js';
import type { Config } from '../../src/config.js';
import { WORKFLOW_ID_HEADER } from '../../src/rabbitmq/dead-letters.js';
import {
  appSample,
  drainQueue,
  pool,
  publisher,
  RABBITMQ_URL,
  resetDatabase,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
} from '../support/harness.js';

/**
 * What Postgres refusing a row, or refusing the app, does on the ingest path (issue 19 §2 §4): a row
 * that can never be written is dead-lettered naming why; a revoked grant is an outage, retried and
 * shown; a run an operator cancels or terminates still dead-letters its message.
 */
describe('ingest: rows Postgres refuses, and a database that refuses the app', () => {
  let db: pg.Pool;
  let config: Config;
  let app: App;
  let amqp: ChannelModel;
  let channel: Channel;

  const http = async (path: string) => {
    const response = await fetch(`http://127.0.0.1:${app.httpPort}${path}`);
    return { status: response.status, body: await response.text() };
  };
  const metric = (sample: string) => appSample(app, sample);
  /** Collects dead letters from the app's dead-letter queue until there are `count`. */
  const deadLetters = async (count: number, timeoutMs = 60_000) => {
    const seen: GetMessage[] = [];
    return await waitFor(
      `${count} dead letters`,
      async () => {
        for (let message; (message = await channel.get(config.DEAD_LETTER_QUEUE, { noAck: true }));)
          seen.push(message);
        return seen.length >= count ? seen : undefined;
      },
      timeoutMs,
    );
  };
  const runningIngests = async () =>
    (
      await app.client.workflow.count(
        `WorkflowType = 'IngestTransaction' AND ExecutionStatus = 'Running' AND TaskQueue = '${config.TEMPORAL_TASK_QUEUE}'`,
      )
    ).count;
  const rowsWithValue = (value: string) =>
    rows(db, 'SELECT id FROM historical_transactions WHERE transaction_value = $1::numeric', [value]);
  const publish = async (messages: [value: string, messageId?: string][]) => {
    const queue = await publisher(config.INCOMING_QUEUE);
    await queue.publishMany(
      messages.map(([value, messageId]) => [`{"id": 1, "value": ${value}}`, messageId ? { messageId } : {}]),
    );
    await queue.close();
  };
  // The test database is this run's own; the grant is the table's, not the role's anywhere else.
  const revokeInsert = () => db.query('REVOKE INSERT ON historical_transactions FROM CURRENT_USER');
  const grantInsert = () => db.query('GRANT INSERT ON historical_transactions TO CURRENT_USER');

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    config = testConfig();
    app = await startTestApp(config);
    amqp = await amqplib.connect(RABBITMQ_URL);
    channel = await amqp.createChannel();
  });

  afterAll(async () => {
    await grantInsert();
    await amqp.close();
    await stopTestApp(app, config);
    await db.end();
  });

  beforeEach(async () => {
    await drainQueue(config.DEAD_LETTER_QUEUE);
  });

  it('dead-letters five rows a CHECK constraint refuses, naming it, and still records the valid one; no run stays open', async () => {
    await db.query(
      'ALTER TABLE historical_transactions ADD CONSTRAINT test_nonzero_value CHECK (transaction_value <> 0)',
    );
    try {
      await publish([['0'], ['0'], ['0'], ['0'], ['0'], ['21.5']]);
      const dead = await deadLetters(5);
      expect(dead).toHaveLength(5);
      for (const message of dead) {
        expect(message.content.toString()).toBe('{"id": 1, "value": 0}');
        expect(message.properties.headers?.[REASON_CODE_HEADER]).toBe('refused_by_database');
        expect(String(message.properties.headers?.[REASON_HEADER])).toMatch(
          /test_nonzero_value.*SQLSTATE 23514, constraint test_nonzero_value/,
        );
      }
      await waitFor('the valid row', async () =>
        (await rowsWithValue('21.5')).length === 1 ? true : undefined,
      );
      await waitFor('no IngestTransaction left running', async () =>
        (await runningIngests()) === 0 ? true : undefined,
      );
      expect(await metric('balance_sync_messages_dead_lettered_total{code="refused_by_database"}')).toBe(5);
    } finally {
      await db.query('ALTER TABLE historical_transactions DROP CONSTRAINT test_nonzero_value');
    }
  });

  it('retries through a revoked INSERT grant with /readyz saying why, dead-letters nothing, and records all once it is back', async () => {
    await revokeInsert();
    try {
      await publish([['31.01', 'grant-1'], ['31.02', 'grant-2'], ['31.03']]);
      const readyz = await waitFor('/readyz to name the outage', async () => {
        const response = await http('/readyz');
        return response.status === 503 && response.body.includes('permission denied') ? response : undefined;
      });
      const body = JSON.parse(readyz.body) as {
        checks: { postgres: boolean };
        reasons: { postgres: string };
      };
      expect(body.checks.postgres).toBe(false);
      expect(body.reasons.postgres).toMatch(
        /permission denied for table historical_transactions \(SQLSTATE 42501\)/,
      );
      expect(await metric('balance_sync_ingest_outage{dependency="postgres"}')).toBe(1);
      expect(await metric('balance_sync_ingest_insert_retries_total{sqlstate_class="42"}')).toBeGreaterThan(
        0,
      );
    } finally {
      await grantInsert();
    }
    for (const value of ['31.01', '31.02', '31.03'])
      await waitFor(`row ${value}`, async () =>
        (await rowsWithValue(value)).length === 1 ? true : undefined,
      );
    await waitFor('/readyz 200 again', async () =>
      (await http('/readyz')).status === 200 ? true : undefined,
    );
    expect(await metric('balance_sync_ingest_outage{dependency="postgres"}')).toBe(0);
    expect(await drainQueue(config.DEAD_LETTER_QUEUE)).toEqual([]);
  });

  it('dead-letters the message of a run an operator cancels, and of one an operator terminates, once each', async () => {
    await revokeInsert();
    try {
      await publish([
        ['41.01', 'cancel-me'],
        ['41.02', 'terminate-me'],
      ]);
      for (const id of ['ingest-cancel-me', 'ingest-terminate-me'])
        await waitFor(`${id} to be running`, async () =>
          (await app.client.workflow.getHandle(id).describe()).status.name === 'RUNNING' ? true : undefined,
        );
      await app.client.workflow.getHandle('ingest-cancel-me').cancel();
      await app.client.workflow.getHandle('ingest-terminate-me').terminate('operator test');
      const dead = await deadLetters(2);
      const byWorkflow = Object.fromEntries(
        dead.map((message) => [String(message.properties.headers?.[WORKFLOW_ID_HEADER]), message]),
      );
      expect(byWorkflow['ingest-cancel-me']?.properties.headers?.[REASON_CODE_HEADER]).toBe('cancelled');
      expect(byWorkflow['ingest-cancel-me']?.properties.messageId).toBe('cancel-me');
      expect(byWorkflow['ingest-terminate-me']?.properties.headers?.[REASON_CODE_HEADER]).toBe('terminated');
      expect(String(byWorkflow['ingest-terminate-me']?.properties.headers?.[REASON_HEADER])).toContain(
        'operator test',
      );
      expect(byWorkflow['ingest-terminate-me']?.content.toString()).toBe('{"id": 1, "value": 41.02}');
      // The dead letter goes out before the cancelled run closes, and before the sweep commits its
      // row: wait for each (a run left RUNNING, or no row, still fails here).
      await waitFor('ingest-cancel-me to close as cancelled', async () =>
        (await app.client.workflow.getHandle('ingest-cancel-me').describe()).status.name === 'CANCELLED'
          ? true
          : undefined,
      );
      await waitFor('the terminated run to be recorded once', async () => {
        const recorded = await rows(db, 'SELECT workflow_id FROM balance_sync_terminated_runs');
        return recorded.length > 0 ? recorded : undefined;
      }).then((recorded) => expect(recorded).toEqual([{ workflow_id: 'ingest-terminate-me' }]));
    } finally {
      await grantInsert();
    }
    expect(await rowsWithValue('41.01')).toEqual([]);
    expect(await rowsWithValue('41.02')).toEqual([]);
  });

  it('dead-letters the message of a running run an operator deletes, as deleted, once', async () => {
    await revokeInsert();
    try {
      await publish([['42.01', 'delete-me']]);
      const { runId } = await waitFor('ingest-delete-me to be watched', async () => {
        const watched = await rows(
          db,
          'SELECT run_id FROM balance_sync_watched_runs WHERE workflow_id = $1',
          ['ingest-delete-me'],
        );
        return watched[0] ? { runId: String(watched[0].run_id) } : undefined;
      });
      await app.client.workflowService.deleteWorkflowExecution({
        namespace: config.TEMPORAL_NAMESPACE,
        workflowExecution: { workflowId: 'ingest-delete-me', runId },
      });
      const [dead] = await deadLetters(1);
      expect(dead?.properties.headers?.[REASON_CODE_HEADER]).toBe('deleted');
      expect(dead?.properties.headers?.[WORKFLOW_ID_HEADER]).toBe('ingest-delete-me');
      expect(dead?.properties.messageId).toBe('delete-me');
      expect(dead?.content.toString()).toBe('{"id": 1, "value": 42.01}');
      await waitFor('the watch forgotten', async () =>
        (await rows(db, 'SELECT 1 FROM balance_sync_watched_runs')).length === 0 ? true : undefined,
      );
    } finally {
      await grantInsert();
    }
    expect(await rowsWithValue('42.01')).toEqual([]);
    expect(await drainQueue(config.DEAD_LETTER_QUEUE)).toEqual([]);
  });
});
