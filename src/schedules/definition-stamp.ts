import type {
  ScheduleDescription,
  ScheduleHandle,
  ScheduleOptions,
  ScheduleOptionsStartWorkflowAction,
} from '@temporalio/client';
import type { Workflow } from '@temporalio/common';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';

/** What the app owns of a schedule: when it fires, what it starts, its policies (not its state). */
export type ScheduleDefinition = Pick<
  ScheduleOptions<ScheduleOptionsStartWorkflowAction<Workflow>>,
  'spec' | 'action' | 'policies'
>;

const LABEL = 'balance-sync schedule definition ';
const STORED_AS = ' stored as ';
const STAMP = /^balance-sync schedule definition (\w+)(?: stored as (\w+))?$/;
/** The stored fingerprint between writing a definition and reading back what the server made of it. */
const PENDING = 'pending';
/** Bump when what a stamp's fingerprints cover, or how they are computed, changes. */
const STAMP_FORMAT = 2;
/**
 * Part of the definition fingerprint: the stamp format and the installed SDK, whose protobufs the
 * stored fingerprint hashes. Two releases that differ in either cannot compare each other's stored
 * fingerprint, so each reads the other's stamp as `other-settings` instead of `changed`.
 */
export const STAMP_RELEASE = `format ${STAMP_FORMAT}, @temporalio/client ${
  (createRequire(import.meta.url)('@temporalio/client/package.json') as { version: string }).version
}`;

/**
 * How a schedule stands against this instance's definition of it:
 * - `same`: what the server holds is what this definition was stored as;
 * - `changed`: edited since the app wrote it (or replaced without the app's stamp): restore it;
 * - `other-settings`: last written by an instance whose definition differs (other settings, or
 *   another stamp format or @temporalio/client version: STAMP_RELEASE); the watch leaves it, so two
 *   deployments never fight over it (start-up writes its own definition over it: ensureSchedule).
 */
export type DefinitionCheck =
  { kind: 'same' } | { kind: 'changed' } | { kind: 'other-settings'; theirs: string; ours: string };

/**
 * The stamp is kept on the schedule, in its action's static details (the memo cannot be updated):
 * the fingerprint of the definition as submitted, and of the spec, action and policies as the
 * server stored them, read back after writing. The server compiles what it is given (a cron string
 * into calendars, defaults filled in), so a submitted definition cannot be compared field by field
 * with a described one; the stored fingerprint can, whatever the edit and however it was made.
 * It assumes the client's payload encoding is deterministic (args encode to the same bytes every
 * time): a codec with a random IV would make each write differ, and every look rewrite the schedule.
 */
export function checkDefinition(
  description: ScheduleDescription,
  definition: ScheduleDefinition,
): DefinitionCheck {
  const details = description.action.type === 'startWorkflow' ? description.action.staticDetails : undefined;
  // No stamp of the app's (replaced without it): changed, and written again.
  const stamp = STAMP.exec(details ?? '');
  if (!stamp) return { kind: 'changed' };
  const ours = definitionFingerprint(definition);
  if (stamp[1] !== ours) return { kind: 'other-settings', theirs: stamp[1]!, ours };
  return stamp[2] === storedFingerprint(description) ? { kind: 'same' } : { kind: 'changed' };
}

/** `definition`'s action with a stamp: `stored` is the fingerprint of the server's copy, if known. */
export function stampedAction(definition: ScheduleDefinition, stored = PENDING) {
  return {
    ...definition.action,
    staticDetails: `${LABEL}${definitionFingerprint(definition)}${STORED_AS}${stored}`,
  };
}

/**
 * Writes `definition` over the schedule's spec, action and policies, then stamps what the server
 * stored, and returns the schedule as described after. Its state stays as found (paused or not,
 * its note), except that `note` replaces the note of a schedule that is not paused.
 * Idempotent: instances with the same settings that restore at once all write the same thing.
 */
export async function writeDefinition(
  handle: ScheduleHandle,
  definition: ScheduleDefinition,
  note?: string,
): Promise<ScheduleDescription> {
  await write(handle, definition, PENDING, note);
  return await stampStored(handle, definition, note);
}

/** Stamps the fingerprint of the server's copy of a definition just written with a pending stamp. */
export async function stampStored(
  handle: ScheduleHandle,
  definition: ScheduleDefinition,
  note?: string,
): Promise<ScheduleDescription> {
  // The stored fingerprint is read from the describe the update itself makes, just before it writes:
  // no separate describe first, so a pause made meanwhile has the shortest window to be lost in.
  await write(handle, definition, storedFingerprint, note);
  return await handle.describe();
}

/** Writes the stamped definition; the state (and, from `stored`, the stamp) from what the update reads. */
async function write(
  handle: ScheduleHandle,
  definition: ScheduleDefinition,
  stored: string | ((previous: ScheduleDescription) => string),
  note?: string,
) {
  await handle.update((previous) => ({
    ...previous,
    ...definition,
    action: stampedAction(definition, typeof stored === 'string' ? stored : stored(previous)),
    state: previous.state.paused || note === undefined ? previous.state : { ...previous.state, note },
  }));
}

/** The fingerprint of `definition` as written by `release` (this one unless said). */
export function definitionFingerprint(definition: ScheduleDefinition, release = STAMP_RELEASE): string {
  return hash(`${release}\n${JSON.stringify(definition)}`);
}

/**
 * The stored-fingerprint part of the schedule's stamp: a fingerprint, `pending` (written, not yet
 * read back), or undefined (no stamp of the app's).
 */
export function storedPart(description: ScheduleDescription): string | undefined {
  const details = description.action.type === 'startWorkflow' ? description.action.staticDetails : undefined;
  return STAMP.exec(details ?? '')?.[2];
}

/** Whether the stamp's stored part was never a fingerprint: writing it again is a renewal, not a restore. */
export function stampPending(description: ScheduleDescription): boolean {
  const stored = storedPart(description);
  return stored === undefined || stored === PENDING;
}

/** The spec, action (but its stamp) and policies as the server holds them. */
function storedFingerprint(description: ScheduleDescription): string {
  const { spec, action, policies } = description.raw.schedule ?? {};
  const stored = JSON.parse(JSON.stringify({ spec, action, policies })) as {
    action?: { startWorkflow?: { userMetadata?: { details?: unknown } } };
  };
  delete stored.action?.startWorkflow?.userMetadata?.details;
  return hash(canonicalJson(stored) ?? '');
}

/**
 * JSON that reads the same for the same schedule: object keys sorted (the server sends map entries,
 * such as payload metadata, in any order), and empty messages and lists left out as unset (an SDK
 * update that copies the action sends `priority: {}` where there was none).
 */
function canonicalJson(value: unknown): string | undefined {
  if (Array.isArray(value)) {
    return value.length === 0
      ? undefined
      : `[${value.map((item) => canonicalJson(item) ?? 'null').join(',')}]`;
  }
  if (value !== null && typeof value === 'object') {
    const fields = Object.entries(value)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([key, item]) => [key, canonicalJson(item)] as const)
      .filter(([, item]) => item !== undefined)
      .map(([key, item]) => `${JSON.stringify(key)}:${item}`);
    return fields.length === 0 ? undefined : `{${fields.join(',')}}`;
  }
  return value === null ? undefined : JSON.stringify(value);
}

function hash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}
