// The markdown tables of bench/ingest.ts, one function per table.
import { eagerCeiling, mean, plainCeiling, type DrainRow } from './drain.js';
import type { CeilingRow } from './temporal-load.js';
import { fmt, report, table, type CpuReport } from './util.js';

const ratio = (a: number | null | undefined, b: number | null | undefined) =>
  a && b ? (a / b).toFixed(2) : '–';

const cpuPerMessage = (cpu: CpuReport, messages: number, name: string) =>
  ((cpu.processes[name] ?? 0) / messages) * 1000;

const cpuColumns = (cpu: CpuReport, messages: number) => [
  cpuPerMessage(cpu, messages, 'temporal'),
  cpuPerMessage(cpu, messages, 'app'),
  cpuPerMessage(cpu, messages, 'postgres'),
  cpuPerMessage(cpu, messages, 'rabbitmq'),
  `${(cpu.machineBusy * 100).toFixed(0)}%`,
  `${(cpu.machineSteal * 100).toFixed(1)}%`,
  fmt(cpu.peakRss.app ?? null, 0),
];

const range = (values: number[] | undefined) =>
  values && values.length > 0 ? values.map((value) => value.toFixed(1)).join(' / ') : '–';

export function reportCeiling(rows: CeilingRow[], cpu: CpuReport | undefined, after: number | undefined) {
  if (rows.length === 0) return;
  report(
    'Ceiling: empty workflow, start + wait for result (in-memory dev server)',
    table(
      [
        'concurrency',
        'eager start requested',
        'eagerly started',
        'workflows/s',
        'p50 ms',
        'p99 ms',
        'errors',
      ],
      rows.map((row) => [
        row.concurrency,
        String(row.eager),
        `${(row.eagerShare * 100).toFixed(0)}%`,
        row.rate,
        row.latency.p50,
        row.latency.p99,
        row.errors,
      ]),
    ) +
      (cpu
        ? `\n\nCPU during the ceiling runs: dev server ${fmt(cpu.processes.temporal)} s, bench process (client + worker) ${fmt(cpu.processes.bench)} s, over ${fmt(cpu.seconds)} s wall; machine busy ${(cpu.machineBusy * 100).toFixed(0)}%, steal ${(cpu.machineSteal * 100).toFixed(1)}%.`
        : '') +
      (after ? `\n\nSame best setting at the end of the in-memory runs: ${fmt(after)} workflows/s.` : ''),
  );
}

export function reportClosedLoops(micro: (string | number)[][], slots: (string | number)[][]) {
  if (micro.length > 0) {
    report(
      'Local activity vs normal activity vs batching (closed loop, eager start)',
      table(['variant', 'concurrency', 'workflows/s', 'rows/s', 'p50 ms', 'p99 ms', 'errors'], micro),
    );
  }
  if (slots.length > 0) {
    report(
      'Worker slots (IngestTransaction closed loop, 64 in flight)',
      table(['worker tuning', 'in flight', 'workflows/s', 'p50 ms', 'p99 ms'], slots),
    );
  }
}

/** Every drain against the ceilings measured beside it, and where its CPU went. */
export function reportDrains(drains: DrainRow[], baselineRate: number | undefined, messages: number) {
  if (drains.length === 0 && !baselineRate) return;
  const memoryEager = drains.find((row) => row.server === 'in-memory' && eagerCeiling(row));
  report(
    'Backlog drain into Postgres, against the empty-workflow ceilings measured on the same server just before / just after it',
    table(
      [
        'run',
        'dev server',
        'messages',
        'msg/s (steady)',
        'spawn → first row ms',
        'plain ceiling wf/s',
        'eager ceiling wf/s',
        '÷ eager (target ≥ 0.8)',
        '÷ plain',
        '÷ in-memory eager',
        '÷ baseline',
      ],
      [
        ...(baselineRate
          ? [
              [
                'plain consumer (no Temporal)',
                '–',
                messages,
                baselineRate,
                '–',
                '–',
                '–',
                '–',
                '–',
                '–',
                '1.00',
              ],
            ]
          : []),
        ...drains.map((row) => [
          row.label,
          row.server,
          row.rows,
          row.rate,
          row.spawnToFirstRowMs,
          range(row.adjacent?.plain),
          range(row.adjacent?.eager),
          ratio(row.rate, eagerCeiling(row)),
          ratio(row.rate, plainCeiling(row)),
          ratio(row.rate, memoryEager ? eagerCeiling(memoryEager) : null),
          ratio(row.rate, baselineRate),
        ]),
      ],
    ) +
      '\n\nEach ceiling: closed loop of empty workflows; "÷" columns use the mean of before and after. ' +
      '"÷ in-memory eager": against the in-memory server of this run (its first drain).',
  );
  report(
    'Where the time goes during the drains (CPU seconds per 1,000 messages)',
    table(
      [
        'run',
        'dev server',
        'app process(es)',
        'Postgres backends',
        'RabbitMQ',
        'machine busy',
        'steal',
        'app peak RSS MiB',
        'peak Temporal wf-task backlog',
        'RabbitMQ ready at half the rows',
        'RabbitMQ empty → last row ms',
        'start bytes: input (of which original) / memo / summary',
        'eager empty workflow beside it: CPU ms per workflow, dev server / bench process',
      ],
      drains.map((row) => [
        `${row.label} (${row.server})`,
        ...cpuColumns(row.cpu, row.rows),
        row.peakBacklog,
        fmt(row.queueDepthAtHalf, 0),
        fmt(row.queueEmptyToLastRowMs),
        row.payload
          ? `${row.payload.input} (${row.payload.original}) / ${row.payload.memo} / ${row.payload.summary}`
          : '–',
        row.adjacent
          ? `${mean(row.adjacent.eagerCpuMs.temporal).toFixed(1)} / ${mean(row.adjacent.eagerCpuMs.bench).toFixed(1)}`
          : '–',
      ]),
    ),
  );
}

/** What the throttle's visibility count costs the dev server, measured after each server's drain. */
export interface CountCostRow {
  server: string;
  counts: number;
  latencyP50Ms: number;
  serverCpuMsPerCount: number;
  /** The throttle counts twice a second: server CPU per message at the drain's rate. */
  serverCpuMsPerMessage: number;
}

export function reportCountCost(rows: CountCostRow[]) {
  if (rows.length === 0) return;
  report(
    "The throttle's bookkeeping: CountWorkflowExecutions (what it sends every 500 ms) in a closed loop after the drain",
    table(
      [
        'dev server',
        'counts',
        'p50 ms',
        'server CPU ms per count',
        'server CPU ms per message at 2 counts/s',
      ],
      rows.map((row) => [
        row.server,
        row.counts,
        row.latencyP50Ms,
        row.serverCpuMsPerCount,
        row.serverCpuMsPerMessage.toFixed(2),
      ]),
    ),
  );
}

export function reportMemory(rows: (string | number)[][]) {
  if (rows.length === 0) return;
  report(
    'Where the peak RSS goes (MiB; main thread at its RSS peak, workflow threads at their own peaks)',
    table(
      [
        'run',
        'RSS',
        'main heap total',
        'main heap used',
        'external',
        'of which array buffers',
        'workflow threads heap total (peak, summed)',
        'rest (native)',
        'msg/s (steady)',
      ],
      rows,
    ),
  );
}

export function reportFixed(rows: (string | number)[][]) {
  if (rows.length === 0) return;
  report(
    'Fixed rates: publish → row committed (ledger ingested_at), in-memory dev server',
    table(
      [
        'rate msg/s',
        'messages',
        'missing',
        'p50 ms',
        'p90 ms',
        'p99 ms',
        'max ms',
        'target',
        'app RSS MiB (peak)',
        'machine busy',
      ],
      rows,
    ),
  );
}
