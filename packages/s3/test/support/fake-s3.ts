import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import S3rver, { type S3rverContext } from 's3rver';
import { createS3Client } from '../../src/index.js';

/** A request as the fake S3 saw it. */
export interface SeenRequest {
  method: string;
  /** The path, e.g. `/bucket/key`. */
  path: string;
  query: Record<string, string | undefined>;
  headers: Record<string, string | string[] | undefined>;
  /** The S3 operation, as far as the tests tell them apart. */
  operation: string;
}

export interface FakeS3 {
  endpoint: string;
  bucket: string;
  /** A client made with `createS3Client`, as users of S3-compatible stores make it. */
  client: S3Client;
  /** Every request so far, oldest first. */
  requests: SeenRequest[];
  /** Multipart uploads in progress, read from s3rver's directory (not through the API). */
  openUploads(): Promise<{ uploadId: string; key: string }[]>;
  /** Resolves once `count` parts (UploadPart) of `keyPart`'s uploads have been stored. */
  partsStored(count: number, keyPart?: string): Promise<void>;
  /** Resolves once `count` requests that `match` accepts have arrived (answered or not). */
  arrived(count: number, match: (request: SeenRequest) => boolean): Promise<void>;
  /** Holds every request that `match` accepts until the returned function is called. */
  hold(match: (request: SeenRequest) => boolean): () => void;
  /**
   * Answers the next request that `match` accepts with a 403 `AccessDenied` (which the SDK does
   * not retry, unlike a 500).
   */
  failNext(match: (request: SeenRequest) => boolean): void;
  stop(): Promise<void>;
}

export interface FakeS3Options {
  /** Listings (ListObjectsV2, ListMultipartUploads) answer at most this many entries a page. */
  pageSize?: number;
}

function operationOf(ctx: S3rverContext, key: string): string {
  const { method, query, headers } = ctx;
  if (!key) {
    if (method === 'GET' && 'uploads' in query) return 'ListMultipartUploads';
    if (method === 'GET' && query['list-type'] === '2') return 'ListObjectsV2';
    if (method === 'HEAD') return 'HeadBucket';
    return `${method} bucket`;
  }
  if (method === 'POST' && 'uploads' in query) return 'CreateMultipartUpload';
  if (method === 'POST' && 'uploadId' in query) return 'CompleteMultipartUpload';
  if (method === 'PUT' && 'uploadId' in query) {
    return 'x-amz-copy-source' in headers ? 'UploadPartCopy' : 'UploadPart';
  }
  if (method === 'PUT') return 'x-amz-copy-source' in headers ? 'CopyObject' : 'PutObject';
  if (method === 'DELETE') return 'uploadId' in query ? 'AbortMultipartUpload' : 'DeleteObject';
  if (method === 'HEAD') return 'HeadObject';
  if (method === 'GET') return 'GetObject';
  return `${method} object`;
}

const xmlEscape = (value: string) =>
  value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function xml(ctx: S3rverContext, status: number, body: string): void {
  ctx.status = status;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n${body}`;
}

function s3Error(ctx: S3rverContext, status: number, code: string, message: string): void {
  xml(ctx, status, `<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message></Error>`);
}

/**
 * s3rver 3.7.1 on 127.0.0.1, port 0, in a temp directory, silent, with one bucket. It lacks
 * three operations the storage uses; they are added here over s3rver's own files, as S3
 * documents them: AbortMultipartUpload (s3rver answers 405), ListMultipartUploads (501) and
 * UploadPartCopy (501). Its ListObjectsV2 fails on Node 17+ as soon as a listing is truncated
 * (its continuation tokens use DES, which OpenSSL 3 no longer offers), so listings are
 * answered here too, from s3rver's store; and its GetObject answers `Range: bytes=0-0` with the
 * whole object, which is cut to its first byte here. Everything else is s3rver's.
 */
export async function startFakeS3(options: FakeS3Options = {}): Promise<FakeS3> {
  const directory = await mkdtemp(join(tmpdir(), 'spark-s3-'));
  const bucket = 'exports';
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: [{ name: bucket }],
  });
  const uploadsDirectory = (name: string) => server.store.getResourcePath(name, undefined, 'uploads');
  const requests: SeenRequest[] = [];
  const faults: ((request: SeenRequest) => boolean)[] = [];
  const partWaiters: { count: number; keyPart: string; resolve: () => void }[] = [];
  const partsByKey = new Map<string, number>();
  const arrivalWaiters: { count: number; match: (request: SeenRequest) => boolean; resolve: () => void }[] =
    [];
  const holds: { match: (request: SeenRequest) => boolean; released: Promise<void> }[] = [];
  const settleArrivalWaiters = () => {
    for (const waiter of [...arrivalWaiters]) {
      if (requests.filter(waiter.match).length >= waiter.count) {
        arrivalWaiters.splice(arrivalWaiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };

  const settlePartWaiters = () => {
    for (const waiter of [...partWaiters]) {
      let stored = 0;
      for (const [key, count] of partsByKey) if (key.includes(waiter.keyPart)) stored += count;
      if (stored >= waiter.count) {
        partWaiters.splice(partWaiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };

  const readUploads = async (name: string) => {
    const root = uploadsDirectory(name);
    const ids = await readdir(root).catch(() => [] as string[]);
    const uploads: { uploadId: string; key: string; initiated: Date }[] = [];
    for (const uploadId of ids) {
      const key = await readFile(join(root, uploadId, 'key'), 'utf8').catch(() => undefined);
      if (key === undefined) continue;
      uploads.push({ uploadId, key, initiated: (await stat(join(root, uploadId))).birthtime });
    }
    return uploads.sort((a, b) =>
      a.key === b.key ? a.uploadId.localeCompare(b.uploadId) : a.key < b.key ? -1 : 1,
    );
  };

  server.middleware.unshift(async (ctx, next) => {
    const [name = '', ...rest] = ctx.path.slice(1).split('/');
    const key = decodeURIComponent(rest.join('/'));
    const seen: SeenRequest = {
      method: ctx.method,
      path: ctx.path,
      query: { ...ctx.query },
      headers: { ...ctx.headers },
      operation: operationOf(ctx, key),
    };
    requests.push(seen);
    settleArrivalWaiters();
    for (const held of holds.filter((candidate) => candidate.match(seen))) await held.released;
    const fault = faults.findIndex((match) => match(seen));
    if (fault !== -1) {
      faults.splice(fault, 1);
      ctx.req.resume();
      return s3Error(ctx, 403, 'AccessDenied', 'Injected by the test');
    }

    switch (seen.operation) {
      case 'AbortMultipartUpload': {
        const uploadDirectory = join(uploadsDirectory(name), String(ctx.query.uploadId));
        const stored = await readFile(join(uploadDirectory, 'key'), 'utf8').catch(() => undefined);
        if (stored !== key) return s3Error(ctx, 404, 'NoSuchUpload', 'The specified upload does not exist.');
        await rm(uploadDirectory, { recursive: true, force: true });
        ctx.status = 204;
        return;
      }
      case 'ListMultipartUploads': {
        const prefix = ctx.query.prefix ?? '';
        const keyMarker = ctx.query['key-marker'] ?? '';
        const idMarker = ctx.query['upload-id-marker'] ?? '';
        const max = Math.min(Number(ctx.query['max-uploads'] ?? 1000), options.pageSize ?? 1000);
        const matching = (await readUploads(name)).filter(
          (upload) =>
            upload.key.startsWith(prefix) &&
            (upload.key > keyMarker || (upload.key === keyMarker && upload.uploadId > idMarker)),
        );
        const page = matching.slice(0, max);
        const truncated = matching.length > page.length;
        const last = page.at(-1);
        return xml(
          ctx,
          200,
          `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${xmlEscape(name)}</Bucket>` +
            `<Prefix>${xmlEscape(prefix)}</Prefix><MaxUploads>${max}</MaxUploads><IsTruncated>${truncated}</IsTruncated>` +
            (truncated && last
              ? `<NextKeyMarker>${xmlEscape(last.key)}</NextKeyMarker><NextUploadIdMarker>${last.uploadId}</NextUploadIdMarker>`
              : '') +
            page
              .map(
                (upload) =>
                  `<Upload><Key>${xmlEscape(upload.key)}</Key><UploadId>${upload.uploadId}</UploadId>` +
                  `<Initiated>${upload.initiated.toISOString()}</Initiated></Upload>`,
              )
              .join('') +
            '</ListMultipartUploadsResult>',
        );
      }
      case 'UploadPartCopy': {
        const source = decodeURIComponent(String(ctx.headers['x-amz-copy-source'])).replace(/^\//, '');
        const [sourceBucket = '', ...sourceKey] = source.split('/');
        const content = await readFile(
          server.store.getResourcePath(sourceBucket, sourceKey.join('/'), 'object'),
        );
        const range = /^bytes=(\d+)-(\d+)$/.exec(String(ctx.headers['x-amz-copy-source-range'] ?? ''));
        const part = range ? content.subarray(Number(range[1]), Number(range[2]) + 1) : content;
        const partPath = join(
          uploadsDirectory(name),
          String(ctx.query.uploadId),
          String(ctx.query.partNumber),
        );
        const md5 = createHash('md5').update(part).digest('hex');
        await writeFile(partPath, part);
        await writeFile(`${partPath}.md5`, md5);
        return xml(
          ctx,
          200,
          `<CopyPartResult><ETag>"${md5}"</ETag><LastModified>${new Date().toISOString()}</LastModified></CopyPartResult>`,
        );
      }
      case 'ListObjectsV2': {
        const prefix = ctx.query.prefix ?? '';
        const token = ctx.query['continuation-token'];
        const startAfter = token
          ? Buffer.from(token, 'base64url').toString('utf8')
          : (ctx.query['start-after'] ?? '');
        const max = Math.min(Number(ctx.query['max-keys'] ?? 1000), options.pageSize ?? 1000);
        const listed = await server.store.listObjects(name, { prefix, startAfter, maxKeys: max });
        const last = listed.objects.at(-1);
        return xml(
          ctx,
          200,
          `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${xmlEscape(name)}</Name>` +
            `<Prefix>${xmlEscape(prefix)}</Prefix><KeyCount>${listed.objects.length}</KeyCount><MaxKeys>${max}</MaxKeys>` +
            `<IsTruncated>${listed.isTruncated}</IsTruncated>` +
            (listed.isTruncated && last
              ? `<NextContinuationToken>${Buffer.from(last.key).toString('base64url')}</NextContinuationToken>`
              : '') +
            listed.objects
              .map(
                (object) =>
                  `<Contents><Key>${xmlEscape(object.key)}</Key><Size>${object.size}</Size>` +
                  `<LastModified>${object.lastModifiedDate.toISOString()}</LastModified></Contents>`,
              )
              .join('') +
            '</ListBucketResult>',
        );
      }
      case 'GetObject': {
        await next();
        // s3rver's store reads an end of 0 as absent (`options.end || Infinity`) and serves the
        // whole object, with `Content-Range: bytes 0-<last>/<size>`. S3 serves the first byte.
        if (ctx.status === 206 && /^bytes=0-0$/.test(String(ctx.headers.range))) {
          (ctx.body as { destroy?: () => void } | undefined)?.destroy?.();
          const file = await readFile(server.store.getResourcePath(name, key, 'object'));
          ctx.body = file.subarray(0, 1);
          ctx.set('Content-Range', `bytes 0-0/${file.length}`);
        }
        return;
      }
      case 'UploadPart':
        await next();
        if (ctx.status < 300) {
          partsByKey.set(key, (partsByKey.get(key) ?? 0) + 1);
          settlePartWaiters();
        }
        return;
      default:
        return next();
    }
  });

  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  const client = createS3Client({
    endpoint,
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  });

  return {
    endpoint,
    bucket,
    client,
    requests,
    openUploads: async () => (await readUploads(bucket)).map(({ uploadId, key }) => ({ uploadId, key })),
    partsStored: (count, keyPart = '') =>
      new Promise<void>((resolve) => {
        partWaiters.push({ count, keyPart, resolve });
        settlePartWaiters();
      }),
    arrived: (count, match) =>
      new Promise<void>((resolve) => {
        arrivalWaiters.push({ count, match, resolve });
        settleArrivalWaiters();
      }),
    hold: (match) => {
      let release!: () => void;
      const held = { match, released: new Promise<void>((resolve) => (release = resolve)) };
      holds.push(held);
      return () => {
        holds.splice(holds.indexOf(held), 1);
        release();
      };
    },
    failNext: (match) => {
      faults.push(match);
    },
    stop: async () => {
      client.destroy();
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
