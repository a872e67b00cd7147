import { describe, expect, it } from 'vitest';
import { Gate } from '../../src/gate.js';

describe('Gate', () => {
  it('lets a wait through at once while open, even with an aborted signal', async () => {
    const aborted = new AbortController();
    aborted.abort(new Error('stopping'));
    await expect(new Gate().wait(aborted.signal)).resolves.toBeUndefined();
  });

  it('holds every wait while closed and wakes them all when opened', async () => {
    const gate = new Gate(false);
    let through = 0;
    const waits = [1, 2].map(() => gate.wait(new AbortController().signal).then(() => through++));
    await Promise.resolve();
    expect(through).toBe(0);
    gate.open();
    await Promise.all(waits);
    expect(through).toBe(2);
    expect(gate.isOpen()).toBe(true);
  });

  it('rejects a wait with the signal’s reason when it aborts first, and not after the gate opens', async () => {
    const gate = new Gate();
    gate.close();
    const stopping = new AbortController();
    const waiting = gate.wait(stopping.signal);
    stopping.abort(new Error('stopping'));
    await expect(waiting).rejects.toThrow('stopping');
    gate.open();
    await expect(gate.wait(stopping.signal)).resolves.toBeUndefined();
  });
});
