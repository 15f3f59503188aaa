// BullMQ on Redis, the add workload of `machinist bench`, the same fields as the Python peers
// (bench/lib/peer.py). Run by run.sh (which installs bullmq and starts the private
// redis-server); by hand:
//
//   BENCH_REDIS_URL=redis://127.0.0.1:PORT/0 NODE_PATH=bench/.node-bullmq/node_modules \
//       node bench_bullmq.cjs --tasks 20000 --json
//
// The worker is worker.cjs, one Node process with `concurrency` async slots and BullMQ's
// defaults otherwise, started per scenario; its memory and CPU are those of its process tree.
// Producers are async loops sharing one Queue (one connection). Completion is seen in the job
// hashes (`finishedOn`): first the wait list empties, then the last jobs sent are polled until
// finished, then every job's `returnvalue` is read back and checked (count, sum).
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { isMainThread, workerData, Worker: Thread } = require('worker_threads');

function statFields(pid) {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

// `pid` and all its descendants.
function tree(pid) {
  const children = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let ppid;
    try {
      ppid = Number(statFields(entry)[1]);
    } catch {
      continue;
    }
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(Number(entry));
  }
  const out = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.pop();
    out.push(p);
    todo.push(...(children.get(p) || []));
  }
  return out;
}

function rssMb(pid) {
  try {
    const m = /^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

const treeRss = (pid) => tree(pid).reduce((s, p) => s + rssMb(p), 0);

function cpuS(pids) {
  let total = 0;
  for (const p of pids) {
    try {
      const f = statFields(p);
      total += Number(f[11]) + Number(f[12]);
    } catch {
      // gone
    }
  }
  return total / TICKS;
}

// The meter's sampling runs in a thread so that walking /proc does not stall the producers.
if (!isMainThread) {
  const ctl = new Int32Array(workerData.shared, 0, 1);
  const peak = new Float64Array(workerData.shared, 8, 1);
  while (Atomics.load(ctl, 0) === 0) {
    peak[0] = Math.max(peak[0], treeRss(workerData.pid));
    Atomics.wait(ctl, 0, 0, 20);
  }
  return;
}

const crypto = require('crypto');
const { execSync, spawn } = require('child_process');
const { performance } = require('perf_hooks');
const { Queue } = require('bullmq');
const { Redis } = require('ioredis');
const VERSION = require('bullmq/package.json').version;

const TICKS = Number(execSync('getconf CLK_TCK').toString().trim());
const REDIS_URL = process.env.BENCH_REDIS_URL;
const RUN = crypto.randomBytes(4).toString('hex');
const ALL = ['enqueue', 'drain', 'end-to-end', 'no-results', 'latency', 'chord', 'backlog'];
const WORKER_JS = path.join(__dirname, 'worker.cjs');
const LIVE = new Set();

const now = () => performance.now() / 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function pauseNs(ns) {
  const until = process.hrtime.bigint() + BigInt(ns);
  while (process.hrtime.bigint() < until) await new Promise((r) => setImmediate(r));
}

function die(msg) {
  console.error(msg);
  for (const w of LIVE) w.proc.kill('SIGKILL');
  process.exit(1);
}

process.on('unhandledRejection', (err) => die(err && err.stack ? err.stack : String(err)));
process.on('uncaughtException', (err) => die(err.stack || String(err)));

// Samples the RSS of a process tree until stopped; measures its CPU over the window.
class TreeMeter {
  constructor(pid) {
    this.pid = pid;
    this.shared = new SharedArrayBuffer(16);
    this.cpu0 = cpuS(tree(pid));
    this.thread = new Thread(__filename, { workerData: { pid, shared: this.shared } });
    this.exited = new Promise((r) => this.thread.once('exit', r));
  }

  async stop() {
    const ctl = new Int32Array(this.shared, 0, 1);
    Atomics.store(ctl, 0, 1);
    Atomics.notify(ctl, 0);
    await this.exited;
    // The thread takes a moment to start: a short run may end before its first sample.
    const peak = Math.max(new Float64Array(this.shared, 8, 1)[0], treeRss(this.pid));
    return [peak, cpuS(tree(this.pid)) - this.cpu0];
  }
}

// p50, p99, max in ms, nearest rank.
function percentiles(samples) {
  if (!samples.length) return null;
  const s = [...samples].sort((a, b) => a - b);
  const n = s.length;
  const at = (q) => s[Math.max(1, Math.min(n, Math.ceil(q * n))) - 1] * 1000;
  return [at(0.5), at(0.99), s[n - 1] * 1000];
}

const round = (v, d) => Math.round(v * 10 ** d) / 10 ** d;

function latFields(samples) {
  const p = percentiles(samples);
  if (!p) return {};
  return { p50_ms: round(p[0], 3), p99_ms: round(p[1], 3), max_ms: round(p[2], 3) };
}

function expectedSum(start, end) {
  let s = 0;
  for (let i = start; i < end; i++) s += i + 1;
  return s;
}

class WorkerProc {
  constructor(queueName, concurrency) {
    const tag = crypto.randomBytes(6).toString('hex');
    this.readyFile = path.join(os.tmpdir(), `bullmq-ready-${tag}`);
    this.exitCode = null;
    this.proc = spawn(process.execPath, [WORKER_JS], {
      env: {
        ...process.env,
        BENCH_QUEUE: queueName,
        BENCH_CONCURRENCY: String(concurrency),
        BENCH_READY_FILE: this.readyFile,
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    this.done = new Promise((r) =>
      this.proc.once('exit', (code, signal) => {
        this.exitCode = code === null ? signal : code;
        LIVE.delete(this);
        r();
      }),
    );
    LIVE.add(this);
  }

  async ready(timeoutS = 60) {
    const deadline = now() + timeoutS;
    while (!fs.existsSync(this.readyFile)) {
      if (this.exitCode !== null) {
        die(`the worker exited with ${this.exitCode} before it was ready`);
      }
      if (now() > deadline) die('the worker did not become ready');
      await sleep(10);
    }
  }

  check() {
    if (this.exitCode !== null) die(`the worker exited with ${this.exitCode}`);
  }

  // Graceful close (SIGTERM), then SIGKILL if it lingers.
  async stop(timeoutS = 60) {
    if (this.exitCode === null) {
      this.proc.kill('SIGTERM');
      let timer;
      await Promise.race([this.done, new Promise((r) => (timer = setTimeout(r, timeoutS * 1000)))]);
      clearTimeout(timer);
      if (this.exitCode === null) {
        this.proc.kill('SIGKILL');
        await this.done;
      }
    }
    fs.rmSync(this.readyFile, { force: true });
  }
}

async function startWorker(queueName, concurrency) {
  const w = new WorkerProc(queueName, concurrency);
  await w.ready();
  return w;
}

// Sends add(i, 1) for i in start..start+n from --producers async loops; ids in order.
async function produce(args, queue, n, start = 0) {
  const ids = new Array(n);
  const took = [];
  const pad = args.payload ? 'x'.repeat(args.payload) : null;
  const work = async (p) => {
    for (let k = p; k < n; k += args.producers) {
      const i = start + k;
      const data = pad === null ? { a: i, b: 1 } : { a: i, b: 1, bench_payload: pad };
      const t = now();
      const job = await queue.add('add', data);
      took.push(now() - t);
      ids[k] = job.id;
    }
  };
  await Promise.all(Array.from({ length: args.producers }, (_, p) => work(p)));
  return [ids, took];
}

// [returnvalue, failedReason, finishedOn] of each job, in pipelines of 1000.
async function readJobs(R, queue, ids) {
  const out = [];
  for (let k = 0; k < ids.length; k += 1000) {
    const pipe = R.pipeline();
    for (const id of ids.slice(k, k + 1000)) {
      pipe.hmget(queue.toKey(id), 'returnvalue', 'failedReason', 'finishedOn');
    }
    for (const [err, fields] of await pipe.exec()) {
      if (err) throw err;
      out.push(fields);
    }
  }
  return out;
}

async function finishedFlags(R, queue, ids) {
  const pipe = R.pipeline();
  for (const id of ids) pipe.hget(queue.toKey(id), 'finishedOn');
  return (await pipe.exec()).map(([err, v]) => {
    if (err) throw err;
    return v !== null;
  });
}

// Until the wait list is empty and the last `tail` jobs have finished; returns that instant.
async function waitDone(R, queue, ids, tail, worker) {
  while ((await queue.getWaitingCount()) > 0) {
    worker.check();
    await sleep(2);
  }
  let watch = ids.slice(-tail);
  const deadline = now() + 120;
  for (;;) {
    const done = await finishedFlags(R, queue, watch);
    watch = watch.filter((_, j) => !done[j]);
    if (!watch.length) return now();
    if (now() > deadline) die(`${watch.length} jobs never completed`);
    await sleep(1);
  }
}

async function verify(R, queue, ids, start = 0) {
  let ok = 0;
  let total = 0;
  for (const [rv, failed, finished] of await readJobs(R, queue, ids)) {
    if (finished !== null && failed === null && rv !== null) {
      ok += 1;
      total += JSON.parse(rv);
    }
  }
  const expected = expectedSum(start, start + ids.length);
  const fields = { succeeded: ok, verified: ok === ids.length && total === expected };
  if (!fields.verified) {
    fields.note = `${ok} of ${ids.length} succeeded; sum ${total}, expected ${expected}`;
  }
  return fields;
}

function base(args, scenario, tasks, seconds) {
  return {
    scenario,
    peer: 'bullmq',
    peer_version: VERSION,
    broker: 'redis',
    tasks,
    seconds: round(seconds, 4),
    tasks_per_sec: seconds > 0 ? round(tasks / seconds, 1) : 0.0,
    concurrency: args.concurrency,
    producers: args.producers,
    cpu_scope: 'worker process tree',
  };
}

async function scenarioEnqueue(args, R, queue) {
  const n = args.tasks;
  const cpu0 = process.cpuUsage();
  const t0 = now();
  const [, took] = await produce(args, queue, n);
  const seconds = now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const queued = await queue.getWaitingCount();
  const out = base(args, 'enqueue', n, seconds);
  Object.assign(out, latFields(took));
  Object.assign(out, {
    succeeded: queued,
    verified: queued === n,
    cpu_scope: 'producer',
    _cpu_s: (cpu.user + cpu.system) / 1e6,
  });
  return out;
}

async function scenarioDrain(args, R, queue, name, n) {
  const [ids] = await produce(args, queue, n);
  const worker = await startWorker(queue.name, args.concurrency);
  const meter = new TreeMeter(worker.proc.pid);
  const rssStart = treeRss(worker.proc.pid);
  const t0 = now();
  const end = await waitDone(R, queue, ids, Math.min(n, 200), worker);
  const [peak, cpu] = await meter.stop();
  await worker.stop();
  const out = base(args, name, n, end - t0);
  Object.assign(out, { peak_rss_mb: round(peak, 1), _cpu_s: cpu });
  if (name === 'backlog') out.rss_start_mb = round(rssStart, 1);
  Object.assign(out, await verify(R, queue, ids));
  return out;
}

async function scenarioEndToEnd(args, R, queue) {
  const n = args.tasks;
  const worker = await startWorker(queue.name, args.concurrency);
  const meter = new TreeMeter(worker.proc.pid);
  const t0 = now();
  const [ids] = await produce(args, queue, n);
  const end = await waitDone(R, queue, ids, Math.min(n, 200), worker);
  const [peak, cpu] = await meter.stop();
  await worker.stop();
  const out = base(args, 'end-to-end', n, end - t0);
  Object.assign(out, { peak_rss_mb: round(peak, 1), _cpu_s: cpu });
  Object.assign(out, await verify(R, queue, ids));
  return out;
}

async function scenarioLatency(args, R, queue) {
  const n = Math.min(args.tasks, args.latencyTasks);
  const worker = await startWorker(queue.name, args.concurrency);
  const ids = [];
  const samples = [];
  const warm = 10;
  let meter = null;
  let t0 = 0;
  for (let k = 0; k < n + warm; k++) {
    if (k === warm) {
      meter = new TreeMeter(worker.proc.pid);
      t0 = now();
    }
    const i = k >= warm ? k - warm : n + k;
    const sent = now();
    const job = await queue.add('add', { a: i, b: 1 });
    const key = queue.toKey(job.id);
    // setTimeout cannot wait 50 µs; pauseNs yields to the event loop until it has passed.
    while ((await R.hget(key, 'finishedOn')) === null) {
      worker.check();
      await pauseNs(50000);
    }
    if (k >= warm) {
      samples.push(now() - sent);
      ids.push(job.id);
    }
  }
  const seconds = now() - t0;
  const [peak, cpu] = await meter.stop();
  await worker.stop();
  const out = base(args, 'latency', n, seconds);
  Object.assign(out, latFields(samples));
  Object.assign(out, { peak_rss_mb: round(peak, 1), _cpu_s: cpu });
  Object.assign(out, await verify(R, queue, ids));
  return out;
}

// Python's json.dumps: ", " and ": " separators, floats with a decimal point.
const FLOATS = new Set([
  'seconds', 'tasks_per_sec', 'cpu_s_per_1000', 'peak_rss_mb', 'rss_start_mb',
  'p50_ms', 'p99_ms', 'max_ms', 'start_p50_ms', 'start_p99_ms',
]);

function pyJson(fields) {
  const value = (k, v) =>
    FLOATS.has(k) && typeof v === 'number' && Number.isInteger(v) ? `${v}.0` : JSON.stringify(v);
  const items = Object.entries(fields).map(([k, v]) => `${JSON.stringify(k)}: ${value(k, v)}`);
  return `{${items.join(', ')}}`;
}

// One scenario's line: JSON (`--json`) or a table row, the same fields as machinist.
function emit(args, fields) {
  const tasks = fields.tasks;
  const cpu = fields._cpu_s;
  delete fields._cpu_s;
  fields.cpu_s_per_1000 = cpu !== undefined && tasks ? round((cpu * 1000) / tasks, 4) : null;
  for (const k of ['floor_tasks_per_sec', 'ratio', 'p50_ms', 'p99_ms', 'max_ms',
    'start_p50_ms', 'start_p99_ms', 'peak_rss_mb']) {
    if (!(k in fields)) fields[k] = null;
  }
  if (args.json) {
    console.log(pyJson(fields));
    return;
  }
  const f = (v, d) => (v === null ? '-' : v.toFixed(d));
  if (fields.skipped) {
    console.log(`${fields.scenario.padEnd(11)} skipped: ${fields.skipped}`);
    return;
  }
  const check = fields.verified ? 'ok' : `FAILED ${fields.note || ''}`;
  console.log(
    `${fields.scenario.padEnd(11)} ${String(tasks).padStart(8)} ` +
      `${fields.tasks_per_sec.toFixed(0).padStart(10)} ` +
      `${f(fields.p50_ms, 3).padStart(8)} ${f(fields.p99_ms, 3).padStart(8)} ` +
      `${f(fields.max_ms, 3).padStart(8)} ${f(fields.peak_rss_mb, 1).padStart(7)} ` +
      `${f(fields.cpu_s_per_1000, 3).padStart(9)}  ${check}`,
  );
}

function tableHeader(args) {
  if (!args.json) {
    console.log(
      `${'scenario'.padEnd(11)} ${'tasks'.padStart(8)} ${'tasks/s'.padStart(10)} ` +
        `${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'max ms'.padStart(8)} ` +
        `${'RSS MB'.padStart(7)} ${'CPU s/1k'.padStart(9)}  check`,
    );
  }
}

const USAGE =
  'usage: bench_bullmq.cjs [--tasks N] [--concurrency N] [--producers N] [--latency-tasks N]\n' +
  '                        [--backlog-tasks N] [--chord-size N] [--payload N]\n' +
  '                        [--scenario NAME]... [--json]';

// The options of peer.py's parser, with BullMQ's own worker and producer defaults.
function parseArgs(argv) {
  const args = {
    tasks: 20000, concurrency: 64, producers: 16, latencyTasks: 1000, backlogTasks: null,
    chordSize: 100, payload: 0, scenario: null, json: false,
  };
  const ints = {
    '--tasks': 'tasks', '--concurrency': 'concurrency', '--producers': 'producers',
    '--latency-tasks': 'latencyTasks', '--backlog-tasks': 'backlogTasks',
    '--chord-size': 'chordSize', '--payload': 'payload',
  };
  const bad = (msg) => {
    console.error(`${USAGE}\nbench_bullmq.cjs: error: ${msg}`);
    process.exit(2);
  };
  for (let k = 0; k < argv.length; k++) {
    let [opt, val] = argv[k].split(/=(.*)/s);
    if (opt === '-h' || opt === '--help') {
      console.log(USAGE);
      process.exit(0);
    }
    if (opt === '--json') {
      args.json = true;
      continue;
    }
    if (!(opt in ints) && opt !== '--scenario') bad(`unrecognized argument: ${argv[k]}`);
    if (val === undefined) {
      if (k + 1 >= argv.length) bad(`argument ${opt}: expected one argument`);
      val = argv[++k];
    }
    if (opt === '--scenario') {
      (args.scenario = args.scenario || []).push(val);
    } else {
      if (!/^[+-]?\d+$/.test(val.trim())) bad(`argument ${opt}: invalid int value: '${val}'`);
      args[ints[opt]] = Number(val);
    }
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const scenarios = args.scenario || ALL;
  for (const name of scenarios) if (!ALL.includes(name)) die(`unknown scenario ${name}`);
  const opts = { maxRetriesPerRequest: null };
  // Fail fast on a wrong URL: with maxRetriesPerRequest null, ioredis would retry forever.
  const probe = new Redis(REDIS_URL, { lazyConnect: true, retryStrategy: () => null });
  probe.on('error', () => {});
  await probe.connect().catch((err) => die(`no Redis at ${REDIS_URL}: ${err.message}`));
  await probe.quit();
  const conn = new Redis(REDIS_URL, opts);
  const R = new Redis(REDIS_URL, opts);
  tableHeader(args);
  let failed = false;
  for (const name of scenarios) {
    console.error(`bullmq: ${name} …`);
    let out;
    if (name === 'no-results' || name === 'chord') {
      out = base(args, name, 0, 0);
      out.skipped = name === 'no-results'
        ? 'BullMQ keeps results with the job; no results-off mode to compare'
        : "chords: not BullMQ's model (flows are parent/children), not compared";
    } else {
      const queue = new Queue(`bullmq_bench_${RUN}_${name}`, { connection: conn });
      await queue.waitUntilReady();
      if (name === 'enqueue') out = await scenarioEnqueue(args, R, queue);
      else if (name === 'drain') out = await scenarioDrain(args, R, queue, 'drain', args.tasks);
      else if (name === 'backlog') {
        out = await scenarioDrain(args, R, queue, 'backlog', args.backlogTasks || args.tasks);
      } else if (name === 'end-to-end') out = await scenarioEndToEnd(args, R, queue);
      else out = await scenarioLatency(args, R, queue);
      await queue.obliterate({ force: true });
      await queue.close();
    }
    failed = failed || out.verified === false;
    emit(args, out);
  }
  await conn.quit();
  await R.quit();
  process.exit(failed ? 1 : 0);
}

main();
