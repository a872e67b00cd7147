/**
 * Waits until one of `waiters` is called (pushed onto the list; the owner calls them all when its
 * state changes), or rejects with the signal's reason when `signal` aborts first.
 */
export async function waitUnlessAborted(waiters: (() => void)[], signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  await new Promise<void>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    waiters.push(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
  });
}
