// BullMQ peer for run.py: the no-op job, its recorder, worker and client side.
//
// Worker (started by run.py):
//   node bullmq_peer.js worker CONCURRENCY [PROCESSES]
//     PROCESSES > 1 forks that many worker processes (the first one is this
//     process); each runs one BullMQ Worker with CONCURRENCY.
// Client:
//   node bullmq_peer.js enqueue-one N [WARM] | enqueue-bulk N BATCH [WARM]
//                       | latency M RATE
// WARM tasks (default 1) are enqueued, untimed, before the N timed ones (one
// batch of WARM for enqueue-bulk), so connections are open and V8 has
// compiled the path; all are counted in "enqueued".
// Environment: BENCH_REDIS_URL (redis://host:port/db or unix:///path),
// BENCH_STAMP_DIR (worker side). Each client command prints one JSON line.
//
// The recorder keeps the task count and the CLOCK_MONOTONIC times of the
// first start and last end (process.hrtime is CLOCK_MONOTONIC on Linux, the
// clock the other peers use) and writes them every 5 ms, and at the first
// task, to $BENCH_STAMP_DIR/stamp-PID in stamp.py's layout.
'use strict';
const fs = require('fs');
const path = require('path');
const { fork } = require('child_process');
const { Queue, Worker } = require('bullmq');

const QUEUE = 'bench';
const LAT_WARM = 20; // untimed tasks the latency client sends first

function connectionFromUrl(s) {
  const u = new URL(s || 'redis://127.0.0.1:6379/0');
  if (u.protocol === 'unix:') return { path: u.pathname };
  const c = { host: u.hostname || '127.0.0.1', port: Number(u.port || 6379) };
  const db = Number((u.pathname || '/0').slice(1) || 0);
  if (db) c.db = db;
  return c;
}
const connection = connectionFromUrl(process.env.BENCH_REDIS_URL);

const mono = () => Number(process.hrtime.bigint()) / 1e9;

const stamp = {
  count: 0, first: 0, last: 0, written: -1, fd: -1, lat: -1,
  buf: Buffer.alloc(24),
  flush() {
    if (this.fd < 0 || this.count === this.written) return;
    this.buf.writeBigInt64LE(BigInt(this.count), 0);
    this.buf.writeDoubleLE(this.first, 8);
    this.buf.writeDoubleLE(this.last, 16);
    fs.writeSync(this.fd, this.buf, 0, 24, 0);
    this.written = this.count;
  },
  record(tEnq) {
    const start = mono();
    const dir = process.env.BENCH_STAMP_DIR;
    if (!dir) return null;
    let firstTask = false;
    if (this.fd < 0) {
      this.fd = fs.openSync(path.join(dir, `stamp-${process.pid}`), 'w+');
      setInterval(() => this.flush(), 5).unref();
      firstTask = true;
    }
    if (tEnq > 0) {
      if (this.lat < 0) this.lat = fs.openSync(path.join(dir, `lat-${process.pid}.txt`), 'a');
      fs.writeSync(this.lat, `${(start - tEnq).toFixed(9)}\n`);
    }
    if (this.count === 0) this.first = start;
    this.count += 1;
    this.last = mono();
    if (firstTask) this.flush();
    return null;
  },
};

async function runWorker(concurrency, processes) {
  const children = [];
  if (processes > 1 && !process.env.BENCH_BULLMQ_CHILD) {
    for (let i = 1; i < processes; i++) {
      children.push(fork(__filename, ['worker', String(concurrency), '1'], {
        env: { ...process.env, BENCH_BULLMQ_CHILD: '1' },
      }));
    }
  }
  const worker = new Worker(QUEUE, async (job) => stamp.record(job.data.t), {
    connection, concurrency,
  });
  worker.on('error', (e) => console.error('bullmq worker error:', e.message));
  let closing = false;
  const stop = async () => {
    if (closing) return;
    closing = true;
    for (const c of children) c.kill('SIGTERM');
    setTimeout(() => process.exit(0), 5000).unref();
    await worker.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function main(argv) {
  const cmd = argv[0];
  if (cmd === 'worker') {
    await runWorker(Number(argv[1] || 2), Number(argv[2] || 1));
    return;
  }
  const queue = new Queue(QUEUE, { connection });
  let out;
  if (cmd === 'enqueue-one') {
    const n = Number(argv[1]);
    const warm = Number(argv[2] || 1);
    for (let i = 0; i < warm; i++) await queue.add('noop', { t: 0 });
    const t0 = mono();
    for (let i = 0; i < n; i++) await queue.add('noop', { t: 0 });
    out = { n, seconds: mono() - t0, enqueued: n + warm };
  } else if (cmd === 'enqueue-bulk') {
    const n = Number(argv[1]);
    const batch = Number(argv[2]);
    const warm = Number(argv[3] || 1);
    const w = [];
    for (let i = 0; i < warm; i++) w.push({ name: 'noop', data: { t: 0 } });
    await queue.addBulk(w);
    const t0 = mono();
    for (let done = 0; done < n;) {
      const k = Math.min(batch, n - done);
      const jobs = new Array(k);
      for (let i = 0; i < k; i++) jobs[i] = { name: 'noop', data: { t: 0 } };
      await queue.addBulk(jobs);
      done += k;
    }
    out = { n, seconds: mono() - t0, enqueued: n + warm, batch };
  } else if (cmd === 'latency') {
    const m = Number(argv[1]);
    const gap = 1 / Number(argv[2]);
    for (let i = 0; i < LAT_WARM; i++) await queue.add('noop', { t: 0 });
    let next = mono();
    for (let i = 0; i < m; i++) {
      next += gap;
      await queue.add('noop', { t: mono() });
      const d = next - mono();
      if (d > 0) await new Promise((r) => setTimeout(r, d * 1000));
    }
    out = { n: m, enqueued: m + LAT_WARM };
  } else {
    throw new Error(`unknown command ${cmd}`);
  }
  await queue.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
