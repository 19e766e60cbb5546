import { describe, expect, it, vi } from 'vitest';
import {
  BackpressureError,
  type BackpressureReason,
  CancelledError,
  describeValue,
  ExportError,
  isBackpressureError,
  isExportError,
  JobStateError,
  NotFoundError,
  SourceError,
  ValidationError,
  WriteError,
} from '../src/errors.js';

const BRAND = Symbol.for('spark-export.error');

describe('ExportError subclasses', () => {
  const cases: Array<[string, () => ExportError, string, string, number]> = [
    ['ExportError', () => new ExportError('INTERNAL', 500, 'internal'), 'ExportError', 'INTERNAL', 500],
    ['ValidationError', () => new ValidationError('bad'), 'ValidationError', 'VALIDATION_FAILED', 422],
    [
      'ValidationError 400',
      () => new ValidationError('bad', { code: 'INVALID_PARAMS', statusCode: 400 }),
      'ValidationError',
      'INVALID_PARAMS',
      400,
    ],
    ['NotFoundError', () => new NotFoundError('gone'), 'NotFoundError', 'NOT_FOUND', 404],
    [
      'NotFoundError UNKNOWN_DATASET',
      () => new NotFoundError('no such dataset', { code: 'UNKNOWN_DATASET' }),
      'NotFoundError',
      'UNKNOWN_DATASET',
      404,
    ],
    [
      'JobStateError not ready',
      () => new JobStateError('JOB_NOT_READY', 'wait'),
      'JobStateError',
      'JOB_NOT_READY',
      409,
    ],
    [
      'JobStateError expired',
      () => new JobStateError('JOB_EXPIRED', 'gone'),
      'JobStateError',
      'JOB_EXPIRED',
      410,
    ],
    ['SourceError', () => new SourceError('orders'), 'SourceError', 'SOURCE_FAILED', 502],
    ['WriteError', () => new WriteError('disk full'), 'WriteError', 'WRITE_FAILED', 500],
    ['CancelledError', () => new CancelledError(), 'CancelledError', 'CANCELLED', 499],
    [
      'CancelledError INTERRUPTED',
      () => new CancelledError('restart', { code: 'INTERRUPTED' }),
      'CancelledError',
      'INTERRUPTED',
      499,
    ],
    [
      'BackpressureError',
      () => new BackpressureError({ reason: 'concurrency_limit', limit: 1, inFlight: 1 }),
      'BackpressureError',
      'BACKPRESSURE',
      429,
    ],
  ];

  it.each(cases)('%s has its name, code and statusCode', (_label, make, name, code, statusCode) => {
    const error = make();
    expect(error).toBeInstanceOf(Error);
    expect(error).toBeInstanceOf(ExportError);
    expect(error.name).toBe(name);
    expect(error.code).toBe(code);
    expect(error.statusCode).toBe(statusCode);
    expect(isExportError(error)).toBe(true);
    expect(String(error)).toBe(`${name}: ${error.message}`);
  });

  it('keeps the cause and leaves it out when none was given', () => {
    const cause = new Error('ENOSPC: no space left on device, write /var/exports/x.csv');
    expect(new WriteError('write failed', { cause }).cause).toBe(cause);
    expect(new SourceError('orders', { cause }).cause).toBe(cause);
    expect(new CancelledError(undefined, { cause: 'client closed' }).cause).toBe('client closed');
    expect(new BackpressureError({ reason: 'queue_full', limit: 1, inFlight: 1, cause }).cause).toBe(cause);
    expect('cause' in new WriteError('write failed')).toBe(false);
  });

  it('toJSON is only { code, message }: no stack, no cause, no internal detail', () => {
    const cause = new Error('password=hunter2 at /srv/app/internal.js');
    const error = new SourceError('orders', { cause, details: { dataset: 'orders' } });
    expect(error.toJSON()).toEqual({
      code: 'SOURCE_FAILED',
      message: 'The data source of dataset "orders" failed',
    });
    const json = JSON.stringify(error);
    expect(JSON.parse(json)).toEqual({
      code: 'SOURCE_FAILED',
      message: 'The data source of dataset "orders" failed',
    });
    expect(json).not.toContain('hunter2');
    expect(json).not.toContain('stack');
    expect(json).not.toContain('internal.js');
  });

  it('SourceError does not put the source error in its client message', () => {
    const error = new SourceError('orders', { cause: new Error('connect ECONNREFUSED 10.0.0.5:5432') });
    expect(error.message).toBe('The data source of dataset "orders" failed');
    expect(error.message).not.toContain('10.0.0.5');
  });

  it('ValidationError puts field in details next to the given details', () => {
    const error = new ValidationError('Expected params.limit to be an integer, got "ten" (string)', {
      field: 'params.limit',
      details: { allowed: [1, 2] },
    });
    expect(error.field).toBe('params.limit');
    expect(error.details).toEqual({ allowed: [1, 2], field: 'params.limit' });
    expect(new ValidationError('bad').field).toBeUndefined();
    expect(new ValidationError('bad').details).toEqual({});
  });

  it('CancelledError has a default message', () => {
    expect(new CancelledError().message).toBe('The export was cancelled');
  });
});

describe('BackpressureError', () => {
  const base = { reason: 'queue_full' as const, limit: 4, inFlight: 4 };

  it.each([
    [0.2, 1],
    [2.1, 3],
    [3, 3],
    [0, 1],
    [-5, 1],
    [undefined, 1],
    [Number.NaN, 1],
    [Number.POSITIVE_INFINITY, 1],
  ])('rounds retryAfterSeconds %s up to the whole number %s (>= 1)', (given, expected) => {
    const error = new BackpressureError({ ...base, retryAfterSeconds: given });
    expect(error.retryAfterSeconds).toBe(expected);
  });

  it.each<[BackpressureReason, string, number, string]>([
    ['concurrency_limit', 'BACKPRESSURE', 429, 'Too many exports in progress (4 of 4); retry later'],
    [
      'queue_full',
      'BACKPRESSURE',
      429,
      'Too many exports in progress (4 of 4) and the wait queue is full; retry later',
    ],
    ['queue_timeout', 'QUEUE_TIMEOUT', 429, 'The export waited too long for a free slot; retry later'],
    ['owner_limit', 'BACKPRESSURE', 429, 'You have too many exports in progress; wait for one to finish'],
    ['shutting_down', 'SHUTTING_DOWN', 503, 'The export service is shutting down; retry later'],
  ])('maps reason %s to %s / %i with a client-safe message', (reason, code, statusCode, message) => {
    const error = new BackpressureError({ reason, limit: 4, inFlight: 4, retryAfterSeconds: 2 });
    expect(error).toMatchObject({
      reason,
      code,
      statusCode,
      message,
      limit: 4,
      inFlight: 4,
      retryAfterSeconds: 2,
    });
    expect(isBackpressureError(error)).toBe(true);
  });
});

describe('isExportError', () => {
  it('recognises an error from a second copy of the package, where instanceof fails', () => {
    const foreign = Object.assign(new Error('The export service is shutting down; retry later'), {
      [BRAND]: true,
      code: 'SHUTTING_DOWN',
      statusCode: 503,
      reason: 'shutting_down',
      retryAfterSeconds: 5,
    });
    expect(foreign).not.toBeInstanceOf(ExportError);
    expect(isExportError(foreign)).toBe(true);
    expect(isBackpressureError(foreign)).toBe(true);

    const plainObject = { [BRAND]: true, code: 'NOT_FOUND', statusCode: 404, message: 'gone' };
    expect(isExportError(plainObject)).toBe(true);
    expect(isBackpressureError(plainObject)).toBe(false);
  });

  it('recognises an error made by a separately loaded copy of the module', async () => {
    vi.resetModules();
    const copy = await import('../src/errors.js');
    vi.resetModules();
    expect(copy.ExportError).not.toBe(ExportError);
    const error = new copy.BackpressureError({ reason: 'queue_timeout', limit: 2, inFlight: 2 });
    expect(error).not.toBeInstanceOf(ExportError);
    expect(isExportError(error)).toBe(true);
    expect(isBackpressureError(error)).toBe(true);
    expect(copy.isExportError(new NotFoundError('gone'))).toBe(true);
  });

  it.each([
    ['a plain Error', new Error('boom')],
    ['a look-alike without the brand', Object.assign(new Error('x'), { code: 'NOT_FOUND', statusCode: 404 })],
    ['a brand that is not true', { [BRAND]: 'true', code: 'NOT_FOUND', statusCode: 404 }],
    [
      'a brand under another symbol',
      { [Symbol('spark-export.error')]: true, code: 'NOT_FOUND', statusCode: 404 },
    ],
    ['a brand under a string key', { 'spark-export.error': true, code: 'NOT_FOUND', statusCode: 404 }],
    ['a branded object without code', { [BRAND]: true, statusCode: 404 }],
    ['a branded object with a numeric code', { [BRAND]: true, code: 404, statusCode: 404 }],
    ['a branded object with a string statusCode', { [BRAND]: true, code: 'NOT_FOUND', statusCode: '404' }],
    ['null', null],
    ['undefined', undefined],
    ['a string', 'NOT_FOUND'],
    ['a number', 404],
  ])('rejects %s', (_label, value) => {
    expect(isExportError(value)).toBe(false);
    expect(isBackpressureError(value)).toBe(false);
  });

  it('isBackpressureError rejects other library errors', () => {
    expect(isBackpressureError(new NotFoundError('gone'))).toBe(false);
    expect(isBackpressureError(new CancelledError())).toBe(false);
  });
});

describe('describeValue', () => {
  it.each<[unknown, string]>([
    ['ten', '"ten" (string)'],
    ['', '"" (string)'],
    ['say "hi"', '"say \\"hi\\"" (string)'],
    [-1, '-1 (number)'],
    [1.5, '1.5 (number)'],
    [Number.NaN, 'NaN (number)'],
    [true, 'true (boolean)'],
    [10n, '10 (bigint)'],
    [null, 'null'],
    [undefined, 'undefined'],
    [[1, 2, 3], 'an array of length 3'],
    [[], 'an array of length 0'],
    [{ a: 1 }, 'an object'],
    [new Date(0), 'an object'],
  ])('describes %o as %s', (value, expected) => {
    expect(describeValue(value)).toBe(expected);
  });

  it('cuts strings longer than 60 characters', () => {
    expect(describeValue('x'.repeat(60))).toBe(`"${'x'.repeat(60)}" (string)`);
    expect(describeValue('y'.repeat(61))).toBe(`"${'y'.repeat(60)}…" (string)`);
  });
});
