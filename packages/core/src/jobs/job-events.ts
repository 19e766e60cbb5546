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
