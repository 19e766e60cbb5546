import { BackpressureError, SourceError } from '@spark-export/core';
import { describe, expect, it } from 'vitest';
import { createLogger, logHttpFailure } from '../src/logging.js';
import { LogCapture } from './helpers.js';

describe('logHttpFailure (every 5xx the HTTP handler answers)', () => {
  const request = { method: 'POST', path: '/export/jobs' };
  const capture = () => {
    const logs = new LogCapture();
    return { logs, log: createLogger('debug', logs) };
  };

  it('logs an unexpected error at error level with its stack', () => {
    const { logs, log } = capture();
    logHttpFailure(log, new TypeError('undefined is not a function'), request);
    expect(logs.lines).toEqual([
      expect.objectContaining({
        level: 'error',
        event: 'http:failed',
        method: 'POST',
        path: '/export/jobs',
        err: expect.objectContaining({ type: 'TypeError', stack: expect.stringContaining('TypeError') }),
      }),
    ]);
  });

  it('logs a 503 SHUTTING_DOWN below warn and without a stack (the rejected event has the warn line)', () => {
    const { logs, log } = capture();
    logHttpFailure(log, new BackpressureError({ reason: 'shutting_down', limit: 5, inFlight: 1 }), request);
    expect(logs.lines).toEqual([
      expect.objectContaining({
        level: 'debug',
        status: 503,
        error: expect.objectContaining({ code: 'SHUTTING_DOWN' }),
      }),
    ]);
    expect(JSON.stringify(logs.lines)).not.toContain('stack');
  });

  it('logs a failing source at warn with its code and cause, without a stack', () => {
    const { logs, log } = capture();
    const cause = Object.assign(new Error('connect ECONNREFUSED 10.0.0.1:5432'), { code: 'ECONNREFUSED' });
    logHttpFailure(log, new SourceError('orders', { cause }), request);
    expect(logs.lines).toEqual([
      expect.objectContaining({
        level: 'warn',
        status: 502,
        error: { code: 'SOURCE_FAILED', message: 'The data source of dataset "orders" failed' },
        cause: { type: 'Error', message: 'connect ECONNREFUSED 10.0.0.1:5432', code: 'ECONNREFUSED' },
      }),
    ]);
    expect(JSON.stringify(logs.lines)).not.toContain('stack');
  });
});
