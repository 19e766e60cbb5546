import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EventSource } from 'eventsource';
import { afterEach, describe, expect, it } from 'vitest';
import { ExportManager } from '../src/export-manager.js';
import {
  createExportHandler,
  type ExportRoutesOptions,
  type ExportService,
  toNodeHandler,
} from '../src/http/index.js';
import type { Job } from '../src/jobs/job.js';
import type { JobChange, JobEventFeed } from '../src/jobs/job-events.js';
import { deferred } from '../src/testing/deferred.js';
import { nextSseEvent, sseReader } from '../src/testing/http-contract/checks.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function blockingManager(options: { events?: JobEventFeed } = {}) {
  const root = await mkdtemp(join(tmpdir(), 'spark-export-events-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const gate = deferred();
  const manager = new ExportManager({
    directory: root,
    maxConcurrent: 2,
    metrics: false,
    ...options,
    datasets: {
      numbers: { source: () => [{ id: 1 }, { id: 2 }] },
      blocking: {
        async *source(_params, { signal }) {
          yield { id: 1 };
          await new Promise<void>((resolve, reject) => {
            signal.addEventListener('abort', () => reject(signal.reason), { once: true });
            void gate.promise.then(resolve);
          });
          yield { id: 2 };
        },
      },
    },
  });
  cleanups.push(async () => {
    gate.resolve();
    await manager.close({ drainTimeoutMs: 0 });
  });
  await manager.ready;
  return { manager, release: () => gate.resolve() };
}

/** A node:http server over the handler that records the Last-Event-ID of each events request. */
async function serve(service: ExportService, options: ExportRoutesOptions = {}) {
  const handler = toNodeHandler(createExportHandler(service, options));
  const lastEventIds: (string | undefined)[] = [];
  const server: Server = createServer((req, res) => {
    if (req.url?.endsWith('/events')) lastEventIds.push(req.headers['last-event-id'] as string | undefined);
    handler(req, res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { server, api: `http://127.0.0.1:${port}/export`, lastEventIds };
}

/** Every event of `source` by name, and a way to wait for one. */
function record(source: EventSource, names: string[]) {
  const seen: { event: string; id: string; data: Record<string, unknown> }[] = [];
  const waiters: { predicate: () => boolean; resolve: () => void }[] = [];
  const check = () => {
    for (const waiter of [...waiters]) {
      if (waiter.predicate()) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };
  for (const name of names) {
    source.addEventListener(name, (event) => {
      seen.push({ event: name, id: event.lastEventId, data: JSON.parse(event.data) });
      check();
    });
  }
  source.addEventListener('open', () => check());
  source.addEventListener('error', () => check());
  return {
    seen,
    until(predicate: () => boolean): Promise<void> {
      if (predicate()) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ predicate, resolve }));
    },
  };
}

const STATES = ['queued', 'running', 'progress', 'succeeded', 'failed', 'cancelled', 'expired'];

describe('the local job event feed', () => {
  it('wakes subscribers on each job:* event with the job id and owner, until they unsubscribe', async () => {
    const { manager } = await blockingManager();
    const changes: JobChange[] = [];
    const unsubscribe = manager.events.subscribe((change) => changes.push(change));
    const first = await manager.start({ dataset: 'numbers', format: 'csv', owner: 'alice' });
    await manager.wait(first.id, { owner: 'alice' });
    expect(changes.at(0)).toEqual({ type: 'started', jobId: first.id, owner: 'alice' });
    expect(changes.at(-1)).toEqual({ type: 'succeeded', jobId: first.id, owner: 'alice' });
    unsubscribe();
    const second = await manager.start({ dataset: 'numbers', format: 'csv' });
    await manager.wait(second.id);
    expect(changes.every((change) => change.jobId === first.id)).toBe(true);
  });

  it('keeps a throwing subscriber from breaking the job', async () => {
    const { manager } = await blockingManager();
    manager.events.subscribe(() => {
      throw new Error('subscriber bug');
    });
    const job = await manager.start({ dataset: 'numbers', format: 'csv' });
    expect((await manager.wait(job.id)).status).toBe('succeeded');
  });

  it('takes a feed of its own in the events option, closed with the manager, and checks it', async () => {
    let closed = 0;
    const feed: JobEventFeed = {
      subscribe: () => () => {},
      close: async () => {
        closed++;
      },
    };
    const { manager } = await blockingManager({ events: feed });
    expect(manager.events).toBe(feed);
    await manager.close();
    expect(closed).toBe(1);
    expect(() => new ExportManager({ events: {} as JobEventFeed })).toThrow(
      /Expected events to be a JobEventFeed \(an object with subscribe\(\)\), got/,
    );
  });
});

describe('GET /export/jobs/:id/events with the eventsource client', () => {
  it('follows a job to its end; reconnecting after the final state gets 204 and the client stops', async () => {
    const { manager, release } = await blockingManager();
    const { api, lastEventIds } = await serve(manager, { eventStreams: { reconnectMs: 10 } });
    const started = new Promise((resolve) => manager.once('job:started', resolve));
    const job = await manager.start({ dataset: 'blocking', format: 'csv' });
    await started;
    const source = new EventSource(`${api}/jobs/${job.id}/events`);
    cleanups.push(() => source.close());
    const events = record(source, STATES);
    await events.until(() => events.seen.some((event) => event.event === 'running'));
    release();
    await events.until(() => source.readyState === EventSource.CLOSED);
    const names = events.seen.map((event) => event.event);
    expect(names[0]).toBe('running');
    expect(names.at(-1)).toBe('succeeded');
    expect(names.filter((name) => name !== 'progress')).toEqual(['running', 'succeeded']);
    const last = events.seen.at(-1)!;
    expect(last.data).toMatchObject({ id: job.id, status: 'succeeded', progress: { rows: 2 } });
    expect(last.id).toBe('succeeded:2');
    // The server ended the stream; the client came back once with the final id and was told 204.
    expect(lastEventIds).toEqual([undefined, 'succeeded:2']);
  });

  it('resumes from Last-Event-ID after a dropped connection, without repeating the state it saw', async () => {
    const { manager, release } = await blockingManager();
    const { api, server, lastEventIds } = await serve(manager, { eventStreams: { reconnectMs: 10 } });
    const started = new Promise((resolve) => manager.once('job:started', resolve));
    const job = await manager.start({ dataset: 'blocking', format: 'csv' });
    await started;
    const source = new EventSource(`${api}/jobs/${job.id}/events`);
    cleanups.push(() => source.close());
    const events = record(source, STATES);
    await events.until(() => events.seen.length === 1);
    const running = events.seen[0]!;
    expect(running.event).toBe('running');
    // The connection drops (a proxy restarts, the network goes away): the client reconnects.
    server.closeAllConnections();
    await events.until(() => lastEventIds.length === 2 && source.readyState === EventSource.OPEN);
    expect(lastEventIds).toEqual([undefined, running.id]);
    release();
    await events.until(() => events.seen.some((event) => event.event === 'succeeded'));
    source.close();
    expect(events.seen.filter((event) => event.event === 'running')).toHaveLength(1);
    expect(events.seen.at(-1)?.data).toMatchObject({ status: 'succeeded' });
  });
});

/** A service double that holds one job whose state the test sets, and a feed the test fires. */
function serviceWithOneJob() {
  let job: Job = {
    id: 'exp_AAAAAAAAAAAAAAAAAAAAAA',
    dataset: 'd',
    format: 'csv',
    status: 'running',
    compression: 'none',
    createdAt: '2026-01-01T00:00:00.000Z',
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: null,
    expiresAt: null,
    progress: { rows: 0, bytes: 0, totalRows: 200 },
    queuePosition: null,
    file: null,
    error: null,
  };
  const listeners = new Set<(change: JobChange) => void>();
  const unsubscribed = deferred();
  let reads = 0;
  const service = {
    jobsEnabled: true,
    events: {
      subscribe(listener: (change: JobChange) => void) {
        listeners.add(listener);
        return () => {
          listeners.delete(listener);
          unsubscribed.resolve();
        };
      },
    },
    async get() {
      reads++;
      return structuredClone(job);
    },
    listenerCount: () => 0,
    emit: () => false,
  } as unknown as ExportService;
  return {
    service,
    get reads() {
      return reads;
    },
    listeners,
    unsubscribed: unsubscribed.promise,
    /** Sets the job and wakes the streams, then waits until their reads have been handled. */
    async change(update: (job: Job) => Job) {
      job = update(structuredClone(job));
      for (const listener of listeners) listener({ type: 'progress', jobId: job.id, owner: null });
      // Reads and the events they send are promise continuations: all run before the next turn.
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}

describe('GET /export/jobs/:id/events: throttle and heartbeat', () => {
  it('sends state changes at once and at most one progress event per progressIntervalMs (injected clock)', async () => {
    const double = serviceWithOneJob();
    const clock = { now: 1_000_000 };
    const { api } = await serve(double.service, {
      now: () => clock.now,
      eventStreams: { progressIntervalMs: 250 },
    });
    const response = await fetch(`${api}/jobs/exp_AAAAAAAAAAAAAAAAAAAAAA/events`);
    const reader = sseReader(response);
    expect((await nextSseEvent(reader))?.event).toBe('running');
    const rows = (value: number) => (job: Job) => ({ ...job, progress: { ...job.progress, rows: value } });
    await double.change(rows(10));
    await double.change(rows(20)); // within 250 ms of the last progress event: not sent
    clock.now += 250;
    await double.change(rows(30));
    await double.change((job) => ({ ...rows(40)(job), status: 'succeeded' })); // a state: sent at once
    const rest = [];
    for (let message = await nextSseEvent(reader); message; message = await nextSseEvent(reader)) {
      rest.push({ event: message.event, id: message.id, data: JSON.parse(message.data ?? '{}') });
    }
    expect(rest.map((message) => message.id)).toEqual(['running:10', 'running:30', 'succeeded:40']);
    expect(rest[0]).toMatchObject({
      event: 'progress',
      data: { rows: 10, bytes: 0, totalRows: 200, percent: 5, status: 'running' },
    });
    expect(rest[1]?.data.percent).toBe(15);
    expect(rest[2]).toMatchObject({
      event: 'succeeded',
      data: { status: 'succeeded', links: { download: '/export/jobs/exp_AAAAAAAAAAAAAAAAAAAAAA/download' } },
    });
    expect(double.listeners.size).toBe(0);
  });

  it('sends a heartbeat comment every heartbeatMs and unsubscribes when the client leaves', async () => {
    const double = serviceWithOneJob();
    const { api } = await serve(double.service, { eventStreams: { heartbeatMs: 5 } });
    const controller = new AbortController();
    const response = await fetch(`${api}/jobs/exp_AAAAAAAAAAAAAAAAAAAAAA/events`, {
      signal: controller.signal,
    });
    const reader = sseReader(response);
    const first = await reader.next();
    expect(first).toEqual({ retry: '2000' });
    expect((await reader.next())?.event).toBe('running');
    expect(await reader.next()).toEqual({ comment: 'heartbeat' });
    expect(await reader.next()).toEqual({ comment: 'heartbeat' });
    expect(double.listeners.size).toBe(1);
    controller.abort();
    await double.unsubscribed;
    expect(double.listeners.size).toBe(0);
  });

  it('checks its options with TypeErrors naming them', () => {
    const double = serviceWithOneJob();
    expect(() => createExportHandler(double.service, { eventStreams: { maxPerOwner: 0 } })).toThrow(
      'Expected eventStreams.maxPerOwner to be an integer >= 1, got 0',
    );
    expect(() => createExportHandler(double.service, { eventStreams: { heartbeatMs: 1.5 } })).toThrow(
      /Expected eventStreams\.heartbeatMs to be an integer >= 1, got 1\.5/,
    );
  });
});
