// The BullMQ worker of bench_bullmq.cjs: add(a, b) on one queue, BullMQ's defaults otherwise
// (completed jobs are kept with their return value, which is how the bench reads results).
//
//   BENCH_REDIS_URL=redis://… BENCH_QUEUE=NAME BENCH_CONCURRENCY=N BENCH_READY_FILE=PATH \
//       NODE_PATH=bench/.node-bullmq/node_modules node worker.cjs
//
// Writes BENCH_READY_FILE once connected; SIGTERM closes gracefully (active jobs finish).
'use strict';

const fs = require('fs');
const { Worker } = require('bullmq');
const { Redis } = require('ioredis');

const connection = new Redis(process.env.BENCH_REDIS_URL, { maxRetriesPerRequest: null });
const worker = new Worker(process.env.BENCH_QUEUE, async (job) => job.data.a + job.data.b, {
  connection,
  concurrency: Number(process.env.BENCH_CONCURRENCY),
});
// Without a listener an 'error' event would throw.
worker.on('error', (err) => console.error(`bullmq worker: ${err.message}`));

let closing = false;
process.on('SIGTERM', async () => {
  if (closing) return;
  closing = true;
  await worker.close();
  await connection.quit();
  process.exit(0);
});

// If the bench dies without stopping us, ioredis would retry its connection forever.
const parent = process.ppid;
setInterval(() => {
  try {
    process.kill(parent, 0);
  } catch {
    process.exit(1);
  }
}, 1000).unref();

worker.waitUntilReady().then(
  () => fs.writeFileSync(process.env.BENCH_READY_FILE, String(process.pid)),
  (err) => {
    console.error(`bullmq worker: ${err.message}`);
    process.exit(1);
  },
);
