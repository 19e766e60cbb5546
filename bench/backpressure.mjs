#!/usr/bin/env node
// How cheap is a refusal? The stream route of a full manager answers 429 (with Retry-After and
// a problem body) against a bare Fastify route that answers 429 with Retry-After: 0 — the floor
// of any Fastify app. Each server runs in its own child process; wrk (Debian's `wrk`) drives
// 50 connections at it for a few seconds, rounds interleaved; the child reports its own CPU
// time, so the table shows server CPU per request beside requests per second.
//
//   npm run build && node bench/backpressure.mjs [rounds] [seconds]
//
// Target (issue "Core redesign"): the stream route >= 0.8x the bare route's requests/s.
import { execFileSync, fork } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

const ROUNDS = Number(process.argv[2] ?? 3);
const SECONDS = Number(process.argv[3] ?? 5);
const CONNECTIONS = 50;

if (process.argv[2] === '--serve') {
  await serve(process.argv[3]);
} else {
  await main();
}

async function main() {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
  } catch (error) {
    // wrk prints its version and exits 1; only a missing program throws ENOENT.
    if (error.code === 'ENOENT') throw new Error('wrk is missing: apt-get install wrk');
  }
  const variants = ['bare-fastify-429', 'stream-route-429'];
  const results = Object.fromEntries(variants.map((name) => [name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of round % 2 === 0 ? variants : [...variants].reverse()) {
      results[name].push(await measure(name));
    }
  }
  const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
  const rows = variants.map((name) => {
    const runs = results[name];
    return {
      name,
      rps: median(runs.map((run) => run.rps)),
      cpuUs: median(runs.map((run) => run.cpuUs)),
      statuses: runs.map((run) => run.nonRefusals).reduce((a, b) => a + b, 0),
    };
  });
  const base = rows[0];
  console.log(
    `node ${process.version}, ${cpus().length} x ${cpus()[0]?.model}, ${ROUNDS} rounds x ${SECONDS} s, ${CONNECTIONS} connections (median)`,
  );
  console.log('| route | requests/s | server CPU per request | vs bare Fastify |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const row of rows) {
    console.log(
      `| ${row.name} | ${Math.round(row.rps).toLocaleString('en')} | ${row.cpuUs.toFixed(1)} µs | ${(row.rps / base.rps).toFixed(2)}x |`,
    );
  }
  for (const row of rows) {
    if (row.statuses > 0)
      console.log(`warning: ${row.name} answered ${row.statuses} requests with something other than 429`);
  }
}

async function measure(name) {
  const child = fork(fileURLToPath(import.meta.url), ['--serve', name], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const port = await new Promise((resolve, reject) => {
    child.once('message', (message) => resolve(message.port));
    child.once('exit', (code) => reject(new Error(`${name} exited (${code})`)));
  });
  const url = `http://127.0.0.1:${port}/export/stream/orders?format=csv`;
  // A short warm-up lets the JIT settle before the measured run.
  execFileSync('wrk', ['-t1', `-c${CONNECTIONS}`, '-d1s', url], { stdio: 'ignore' });
  child.send('cpu');
  const before = await new Promise((resolve) => child.once('message', resolve));
  const output = execFileSync('wrk', ['-t1', `-c${CONNECTIONS}`, `-d${SECONDS}s`, url], { encoding: 'utf8' });
  child.send('cpu');
  const after = await new Promise((resolve) => child.once('message', resolve));
  child.kill();
  const requests = Number(/(\d+) requests in/.exec(output)?.[1]);
  const nonRefusals = Number(/Non-2xx or 3xx responses: (\d+)/.exec(output)?.[1] ?? 0);
  const cpu = after.user + after.system - before.user - before.system;
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1]),
    cpuUs: cpu / requests,
    // Every answer is meant to be a 429 (a non-2xx): count the ones that were not.
    nonRefusals: requests - nonRefusals,
  };
}

async function serve(name) {
  const { default: Fastify } = await import('fastify');
  const app = Fastify({ logger: false });
  if (name === 'bare-fastify-429') {
    app.get('/export/stream/:dataset', (_request, reply) => {
      reply
        .code(429)
        .header('retry-after', '0')
        .type('application/problem+json')
        .send('{"type":"about:blank","title":"Too Many Requests","status":429}');
    });
  } else {
    const { ExportManager } = await import('@spark-export/core');
    const { exportPlugin } = await import('@spark-export/fastify');
    const manager = new ExportManager({ maxConcurrent: 1, metrics: {} });
    let hold;
    manager.defineDataset('orders', {
      columns: [{ name: 'id', type: 'integer' }],
      async *source() {
        // Holds the only slot for the whole run, so that every request is refused.
        yield { id: 1 };
        await new Promise((resolve) => {
          hold = resolve;
        });
      },
    });
    await app.register(exportPlugin, { manager });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const holder = await fetch(
      `http://127.0.0.1:${app.server.address().port}/export/stream/orders?format=csv`,
    );
    if (holder.status !== 200) throw new Error(`the slot holder got ${holder.status}`);
    process.on('exit', () => hold?.());
    process.send({ port: app.server.address().port });
    process.on('message', () => process.send(process.cpuUsage()));
    return;
  }
  await app.listen({ port: 0, host: '127.0.0.1' });
  process.send({ port: app.server.address().port });
  process.on('message', () => process.send(process.cpuUsage()));
}
