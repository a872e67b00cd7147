/** What a start waits at: whether it may go ahead now, and a wait until it may. */
export interface StartGate {
  isOpen(): boolean;
  /** Resolves once the gate is open (at once when it is); rejects with the signal's reason if it aborts first. */
  wait(signal: AbortSignal): Promise<void>;
}

/** A gate its owner opens and closes; opening it wakes every wait. */
export class Gate implements StartGate {
  private waiters: (() => void)[] = [];

  constructor(private opened = true) {}

  isOpen(): boolean {
    return this.opened;
  }

  close(): void {
    this.opened = false;
  }

  /** Opens the gate and wakes every wait, including one that began while it was open. */
  open(): void {
    this.opened = true;
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }

  async wait(signal: AbortSignal): Promise<void> {
    if (this.opened) return;
    signal.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }
}
