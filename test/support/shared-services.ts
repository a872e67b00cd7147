import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * Who listens on the machine's shared service ports: the process and its listening socket. A
 * restarted server has a new PID; a RabbitMQ `stop_app`/`start_app` keeps the PID but opens a new
 * listening socket. Global setup compares a snapshot from before and after the run, so a test that
 * stops or restarts a service it did not start fails the run (issue: tests never touch shared services).
 */
export interface Listener {
  port: number;
  pid: number | undefined;
  command: string | undefined;
  socketInode: string;
}

function listeningInodes(port: number): string[] {
  const inodes: string[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      const local = fields[1];
      if (!local || fields[3] !== '0A') continue; // 0A: LISTEN
      if (Number.parseInt(local.split(':')[1]!, 16) === port) inodes.push(fields[9]!);
    }
  }
  return inodes.sort();
}

function socketOwners(inodes: ReadonlySet<string>): Map<string, number> {
  const owners = new Map<string, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${entry}/fd/${fd}`))?.[1];
        if (inode && inodes.has(inode) && !owners.has(inode)) owners.set(inode, Number(entry));
      } catch {
        // The process or fd went away.
      }
    }
  }
  return owners;
}

/** The listeners on `ports` (ports nobody listens on locally are left out). */
export function sharedListeners(ports: readonly number[]): Listener[] {
  const byPort = ports.map((port) => ({ port, inodes: listeningInodes(port) }));
  const owners = socketOwners(new Set(byPort.flatMap(({ inodes }) => inodes)));
  return byPort.flatMap(({ port, inodes }) =>
    inodes.map((socketInode) => {
      const pid = owners.get(socketInode);
      let command: string | undefined;
      try {
        command = pid === undefined ? undefined : readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        command = undefined;
      }
      return { port, pid, command, socketInode };
    }),
  );
}

export const portOf = (url: string, fallback: number) => Number(new URL(url).port || fallback);

export const describeListeners = (listeners: readonly Listener[]) =>
  listeners
    .map((l) => `${l.port}: ${l.command ?? '?'} pid ${l.pid ?? '?'} socket ${l.socketInode}`)
    .join('; ');
