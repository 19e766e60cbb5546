import type { EventEmitter } from 'node:events';
import type { ExportManagerEvents } from '../types.js';

export type JobChangeType =
  | 'queued'
  | 'started'
  | 'progress'
  | 'succeeded'
  | 'failed'
  | 'cancelled'
  | 'expired';

/** A wake-up that something happened to a job; read the job itself for its state (the store is the truth). */
export interface JobChange {
  readonly type: JobChangeType;
  readonly jobId: string;
  readonly owner: string | null;
}

/** Job changes as a process sees them; a shared backend's feed carries every replica's changes. */
export interface JobEventFeed {
  /** Calls `listener` on each change; returns the function that unsubscribes. */
  subscribe(listener: (change: JobChange) => void): () => void;
  close?(): Promise<void>;
}

export const JOB_CHANGE_TYPES: readonly JobChangeType[] = [
  'queued',
  'started',
  'progress',
  'succeeded',
  'failed',
  'cancelled',
  'expired',
];

/**
 * The feed of one manager's own `job:*` events: the changes of the jobs this process runs
 * (and expires). The manager's default `events`; a cluster passes a shared feed instead.
 */
export function localJobEventFeed(emitter: EventEmitter<ExportManagerEvents>): JobEventFeed {
  return {
    subscribe(listener) {
      const handlers = JOB_CHANGE_TYPES.map((type) => {
        const event = `job:${type}` as const;
        const handler = (job: { id: string }, ...rest: unknown[]) => {
          // `job:failed` carries the error before the context; the context is always last.
          const context = rest.at(-1) as { owner?: string | undefined } | undefined;
          // A listener that throws must not break the emitter's other listeners (the runner's emit).
          try {
            listener({ type, jobId: job.id, owner: context?.owner ?? null });
          } catch {
            // The listener's own failure is its own; the job goes on.
          }
        };
        (emitter as EventEmitter).on(event, handler);
        return [event, handler] as const;
      });
      return () => {
        for (const [event, handler] of handlers) (emitter as EventEmitter).off(event, handler);
      };
    },
  };
}
