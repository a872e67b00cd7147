// node dist/bench/profile-summary.js <dir> --messages N
//
// Reads the .cpuprofile files `node --cpu-prof` wrote for one app process (`npm run bench:ingest --
// --cpuProfDir <dir>`: the main thread and each workflow thread) and splits their CPU time into the
// ingest path's stages, per message. Only the drain counts: from the first delivery handled to the last
// row recorded on the main thread's clock (the threads share it). A sample belongs to the first frame,
// from the leaf up, that a stage owns; shared code (payload conversion, protobuf, Node internals) takes
// the stage of whoever called it. Workflow threads are all "workflow task".
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { table } from './lib/util.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

const STAGES: [stage: string, test: (frame: ProfileNode['callFrame']) => boolean][] = [
  ['throttle bookkeeping', ({ url }) => url.includes('/bridge/in-flight-throttle')],
  [
    'workflow start',
    ({ url, functionName }) =>
      url.includes('/bridge/start-ingest') ||
      url.includes('@temporalio/client') ||
      functionName === 'originalMessage',
  ],
  [
    'insert',
    ({ url }) =>
      url.includes('/activities/record-transaction') ||
      /node_modules\/(pg|pg-pool|pg-protocol|pg-types)\//.test(url),
  ],
  ['workflow task', ({ url }) => url.includes('@temporalio/worker') || url.includes('@temporalio/workflow')],
  [
    'consume and parse',
    ({ url }) =>
      /\/bridge\/(handle-delivery|consumer|bridge|parse-transaction|provider-directory)/.test(url) ||
      /node_modules\/(amqplib|amqp-connection-manager|lossless-json)\//.test(url),
  ],
  ['metrics and logs', ({ url }) => /node_modules\/(prom-client|pino|sonic-boom)\//.test(url)],
];

function stageOf(stack: ProfileNode['callFrame'][]): string {
  for (const frame of stack) {
    for (const [stage, test] of STAGES) if (test(frame)) return stage;
  }
  const leaf = stack[0]?.functionName ?? '';
  if (leaf === '(garbage collector)') return 'garbage collection';
  if (leaf === '(idle)') return 'idle';
  return 'other (runtime, timers, unattributed)';
}

function load(path: string) {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const stackOf = (id: number) => {
    const stack: ProfileNode['callFrame'][] = [];
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at))
      stack.push(byId.get(at)!.callFrame);
    return stack;
  };
  let time = profile.startTime;
  const samples = profile.samples.map((id, i) => {
    time += profile.timeDeltas[i] ?? 0;
    return { id, time, ms: (profile.timeDeltas[i + 1] ?? 0) / 1000 };
  });
  return { samples, stackOf };
}

const [dir, ...rest] = process.argv.slice(2);
const messagesAt = rest.indexOf('--messages');
const messages = messagesAt >= 0 ? Number(rest[messagesAt + 1]) : Number.NaN;
if (!dir || !Number.isFinite(messages)) {
  process.stderr.write('usage: node dist/bench/profile-summary.js <dir> --messages N\n');
  process.exit(2);
}
const files = readdirSync(dir).filter((file) => file.endsWith('.cpuprofile'));
// The main thread's file is the one whose profile has the bridge in it.
const profiles = files.map((file) => ({ file, ...load(join(dir, file)) }));
const main = profiles.find(({ samples, stackOf }) =>
  samples.some(({ id }) => stackOf(id).some((frame) => frame.url.includes('/bridge/handle-delivery'))),
);
if (!main) throw new Error(`no profile in ${dir} ran the bridge`);
const inStack = (id: number, part: string) => main.stackOf(id).some((frame) => frame.url.includes(part));
const from = main.samples.find(({ id }) => inStack(id, '/bridge/handle-delivery'))!.time;
const to = [...main.samples].reverse().find(({ id }) => inStack(id, '/activities/record-transaction'))!.time;

const stages = new Map<string, number>();
const functions = new Map<string, number>();
for (const profile of profiles) {
  const workflowThread = profile !== main;
  for (const { id, time, ms } of profile.samples) {
    if (time < from || time > to) continue;
    const stack = profile.stackOf(id);
    const stage = workflowThread && stack[0]?.functionName !== '(idle)' ? 'workflow task' : stageOf(stack);
    if (stage === 'idle') continue;
    stages.set(stage, (stages.get(stage) ?? 0) + ms);
    const leaf = stack[0]!;
    const where = `${leaf.functionName || '(anonymous)'} ${leaf.url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, 'dist/')}:${leaf.lineNumber + 1}`;
    const key = `${workflowThread ? 'workflow thread' : 'main'} | ${stage} | ${where}`;
    functions.set(key, (functions.get(key) ?? 0) + ms);
  }
}
const total = [...stages.values()].reduce((a, b) => a + b, 0);
const seconds = (to - from) / 1e6;
process.stdout.write(
  `\nProfiles: ${profiles.length} threads (${files.join(', ')}); drain window ${seconds.toFixed(1)} s; ` +
    `${messages} messages; JavaScript CPU ${(total / 1000).toFixed(1)} s (${(total / messages).toFixed(2)} ms per message).\n\n`,
);
process.stdout.write(
  table(
    ['stage', 'CPU ms per message', 'share'],
    [...stages.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([stage, ms]) => [stage, (ms / messages).toFixed(3), `${((ms / total) * 100).toFixed(0)}%`]),
  ) + '\n\n',
);
process.stdout.write(
  table(
    ['thread | stage | function (self time)', 'CPU ms per message'],
    [...functions.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 25)
      .map(([key, ms]) => [key, (ms / messages).toFixed(3)]),
  ) + '\n',
);
