// Preloaded into the app by bench:ingest's `variants` phase (NODE_OPTIONS=--import <this file>), in the
// main thread and in every worker thread (the Temporal SDK runs workflows in one per worker). Each
// thread samples its own V8 heap every 200 ms and rewrites `<MEMORY_PROBE_FILE>.<threadId>` with its
// peaks; the main thread also records process.memoryUsage() at the moment RSS peaked, so the bench can
// split the peak RSS into the main V8 heap, external/array buffers, the workflow threads' heaps and the
// rest (native: the Rust core, code, allocator slack).
import { writeFileSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { isMainThread, threadId } from 'node:worker_threads';

const file = process.env.MEMORY_PROBE_FILE;
if (file) {
  const mib = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;
  const peak: Record<string, number> = {};
  let atPeakRss: Record<string, number> | undefined;
  const sample = () => {
    const heap = getHeapStatistics();
    peak.heapTotal = Math.max(peak.heapTotal ?? 0, mib(heap.total_heap_size));
    peak.heapUsed = Math.max(peak.heapUsed ?? 0, mib(heap.used_heap_size));
    if (isMainThread) {
      const usage = process.memoryUsage();
      if (!atPeakRss || mib(usage.rss) > atPeakRss.rss!) {
        atPeakRss = {
          rss: mib(usage.rss),
          heapTotal: mib(usage.heapTotal),
          heapUsed: mib(usage.heapUsed),
          external: mib(usage.external),
          arrayBuffers: mib(usage.arrayBuffers),
        };
      }
    }
    writeFileSync(`${file}.${threadId}`, JSON.stringify({ threadId, peak, atPeakRss }));
  };
  setInterval(sample, 200).unref();
}
