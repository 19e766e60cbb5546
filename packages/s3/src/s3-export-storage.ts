import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { type ExportStorage, isJobId, type StorageWrite } from '@spark-export/core';
import { attachmentDisposition } from '@spark-export/core/http';
import { checkFileName, checkInteger, describeValue, isFileName } from './checks.js';
import { MAX_COPY_OBJECT_BYTES } from './copy.js';
import { listKeys, listUploads } from './listing.js';
import { isNotFound } from './s3-errors.js';
import { startWrite } from './s3-write.js';

const MiB = 1024 * 1024;
/** S3's smallest part (but the last). */
const MIN_PART_SIZE = 5 * MiB;
const MAX_PART_SIZE = 5 * 1024 * MiB;
/** SigV4 presigned URLs live at most a week. */
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;
/** Temporary objects live under `<prefix>.partial/`, apart from the published files. */
const PARTIAL = '.partial/';

export interface S3ExportStorageOptions {
  /**
   * The client to the bucket. For S3-compatible stores (MinIO, R2, Ceph, LocalStack) create it
   * with {@link createS3Client}, which turns off the SDK's default request checksums.
   */
  client: S3Client;
  /** The bucket; it must exist (`open()` checks it). */
  bucket: string;
  /**
   * Key prefix of every object this storage writes, lists and deletes, e.g. `exports/`. Use
   * one prefix per job store: orphan removal deletes files under it that no job claims.
   * @default '' (the bucket's root)
   */
  prefix?: string;
  /**
   * Bytes per uploaded part, from 5 MiB to 5 GiB. A file can have at most 10,000 parts, so this
   * also caps its size (80 GiB at the default).
   * @default 8 MiB
   */
  partSize?: number;
  /**
   * Parts uploaded at once. A write holds about `partSize × (queueSize + 1)` bytes in memory.
   * @default 2
   */
  queueSize?: number;
  /**
   * Presigned downloads: the HTTP handler answers a download with a 302 to a presigned GetObject
   * URL, and the object store serves the bytes (and ranges). `false` serves them through the
   * handler instead, like `proxy: true`.
   * @default {} (presigned, valid for as long as the manager asks: 300 s)
   */
  presign?: { expiresInSeconds?: number } | false;
  /**
   * Serve downloads through the HTTP handler (`read()`), for buckets that clients cannot reach.
   * @default false
   */
  proxy?: boolean;
  /**
   * Files larger than this are published with a multipart copy (UploadPartCopy) instead of one
   * CopyObject. Lower it for stores whose CopyObject limit is below S3's.
   * @default 5 GiB (S3's CopyObject limit)
   */
  multipartCopyThreshold?: number;
  /**
   * A write with `replace` (a job run again after its process died) aborts that job's multipart
   * uploads begun at least this long ago. A dead run's upload is older than the job backend's
   * lock (30 s for `BullJobQueue`), while an upload younger than this may belong to a run that
   * is still ending on its own (it aborts its upload itself). Keep it below the lock duration.
   * @default 20_000
   */
  staleUploadMs?: number;
}

/**
 * Export files in an S3 bucket (or an S3-compatible store), for several replicas that share
 * files, or for presigned downloads that take the bytes off the service.
 *
 * A file is uploaded as it is written, as a streamed multipart upload to
 * `<prefix>.partial/<name>.<random>`; `commit()` copies it to `<prefix><name>` with its sha256
 * in the object metadata (`x-amz-meta-sha256`), then deletes the temporary object. Nothing is
 * visible under the final key before that. A failed or cancelled export aborts its multipart
 * upload, so no parts are left behind.
 *
 * @example
 * ```ts
 * const storage = new S3ExportStorage({ client: new S3Client({ region: 'eu-central-1' }), bucket: 'exports' });
 * const manager = new ExportManager({ store: new FileJobStore('./jobs'), storage });
 * ```
 */
export class S3ExportStorage implements ExportStorage {
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  readonly #partSize: number;
  readonly #queueSize: number;
  readonly #staleUploadMs: number;
  readonly #presign: { expiresInSeconds: number | undefined } | undefined;
  readonly #multipartCopyThreshold: number;
  /** Keys of uploads in flight in this process. */
  readonly #active = new Set<string>();

  constructor(options: S3ExportStorageOptions) {
    if (typeof options !== 'object' || options === null) {
      throw new TypeError(`Expected options to be an object, got ${describeValue(options)}`);
    }
    const { client, bucket, prefix = '' } = options;
    if (typeof client !== 'object' || client === null || typeof client.send !== 'function') {
      throw new TypeError(`Expected client to be an S3Client, got ${describeValue(client)}`);
    }
    if (typeof bucket !== 'string' || bucket === '') {
      throw new TypeError(`Expected bucket to be a non-empty string, got ${describeValue(bucket)}`);
    }
    if (typeof prefix !== 'string' || prefix.startsWith('/')) {
      throw new TypeError(
        `Expected prefix to be a string not starting with "/", got ${describeValue(prefix)}`,
      );
    }
    this.client = client;
    this.bucket = bucket;
    this.prefix = prefix;
    this.#partSize = checkInteger('partSize', options.partSize, 8 * MiB, MIN_PART_SIZE, MAX_PART_SIZE);
    this.#queueSize = checkInteger('queueSize', options.queueSize, 2, 1, 64);
    this.#staleUploadMs = checkInteger('staleUploadMs', options.staleUploadMs, 20_000, 0, 24 * 3_600_000);
    this.#multipartCopyThreshold = checkInteger(
      'multipartCopyThreshold',
      options.multipartCopyThreshold,
      MAX_COPY_OBJECT_BYTES,
      MIN_PART_SIZE,
      MAX_COPY_OBJECT_BYTES,
    );
    const { presign = {}, proxy = false } = options;
    if (typeof proxy !== 'boolean') {
      throw new TypeError(`Expected proxy to be a boolean, got ${describeValue(proxy)}`);
    }
    if (presign !== false && (typeof presign !== 'object' || presign === null)) {
      throw new TypeError(`Expected presign to be an object or false, got ${describeValue(presign)}`);
    }
    this.#presign =
      proxy || presign === false
        ? undefined
        : {
            expiresInSeconds:
              presign.expiresInSeconds === undefined
                ? undefined
                : checkInteger(
                    'presign.expiresInSeconds',
                    presign.expiresInSeconds,
                    0,
                    1,
                    MAX_PRESIGN_SECONDS,
                  ),
          };
  }

  /** The object key of a stored file. */
  keyOf(name: string): string {
    return `${this.prefix}${checkFileName(name)}`;
  }

  /** Checks that the bucket exists and the credentials reach it. */
  async open(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      throw new Error(`Cannot reach the export bucket ${JSON.stringify(this.bucket)}`, { cause: error });
    }
  }

  async createWrite(
    jobId: string,
    file: { extension: string; contentType: string; replace?: boolean },
  ): Promise<StorageWrite> {
    if (!isJobId(jobId)) throw new TypeError(`Expected a job id, got ${describeValue(jobId)}`);
    const name = checkFileName(`${jobId}.${file.extension}`);
    // A re-run (or the give-up) of a job whose process died: the dead run's multipart upload
    // goes now, not at the next start-up's orphan pass, which a job backend shared by replicas
    // never runs.
    if (file.replace) await this.#discardStaleUploads(`${this.prefix}${PARTIAL}${name}.`);
    // A random suffix keeps two writes of one job (a re-run while a stale process still
    // uploads) from ever sharing a temporary key.
    const partialKey = `${this.prefix}${PARTIAL}${name}.${randomBytes(6).toString('hex')}`;
    return startWrite({
      client: this.client,
      bucket: this.bucket,
      name,
      finalKey: this.keyOf(name),
      partialKey,
      contentType: file.contentType,
      partSize: this.#partSize,
      queueSize: this.#queueSize,
      multipartCopyThreshold: this.#multipartCopyThreshold,
      active: this.#active,
    });
  }

  /**
   * The committed file's size; `undefined` when there is no such object, or when `name` is not
   * a stored file's name (no request is made for it). Other failures throw.
   */
  async stat(name: string): Promise<{ bytes: number } | undefined> {
    // A name like `sub/../<name>` is no file of ours, and a server or proxy that normalizes the
    // request path would find the real one: the answer is "none", without asking.
    if (!isFileName(name)) return undefined;
    try {
      const head = await this.client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: this.keyOf(name) }),
      );
      return { bytes: head.ContentLength ?? 0 };
    } catch (error) {
      // Only a 404 means "gone": an unreachable store must not expire the jobs at recovery.
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /**
   * The object's bytes, or the inclusive range `start..end`. Throws when the store answers a
   * range with other bytes than those asked for (or with the whole object).
   */
  async read(name: string, range?: { start: number; end: number }): Promise<Readable> {
    const result = await this.client.send(
      new GetObjectCommand({
        Bucket: this.bucket,
        Key: this.keyOf(name),
        ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}),
      }),
    );
    // In Node the SDK's body is the IncomingMessage (a Readable) with helper methods mixed in.
    const body = result.Body as Readable;
    // The handler has already sent `Content-Range: bytes start-end/size`: a store that serves
    // other bytes (one that ignores `Range`, or reads an end of 0 as "to the end") would make it
    // a silently corrupt download, so it fails here instead.
    if (range && !result.ContentRange?.startsWith(`bytes ${range.start}-${range.end}/`)) {
      body?.destroy();
      throw new Error(
        `The object store answered the range ${range.start}-${range.end} of ${name} with ${
          result.ContentRange === undefined ? 'no Content-Range' : JSON.stringify(result.ContentRange)
        }`,
      );
    }
    return body;
  }

  async remove(name: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keyOf(name) }));
  }

  /**
   * Aborts the multipart uploads under `keyPrefix` that no write of this process owns and that
   * began at least `staleUploadMs` ago. Temporary objects are left to retention and the
   * bucket's lifecycle rule: one may be the source of another process's publishing copy.
   */
  async #discardStaleUploads(keyPrefix: string): Promise<void> {
    const before = Date.now() - this.#staleUploadMs;
    const uploads: { key: string; uploadId: string }[] = [];
    for await (const upload of listUploads(this.client, this.bucket, keyPrefix)) {
      const initiated = upload.initiated?.getTime() ?? 0;
      if (!this.#active.has(upload.key) && initiated <= before) uploads.push(upload);
    }
    for (const { key, uploadId } of uploads) {
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }))
        .catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
    }
  }

  /**
   * Aborts the multipart uploads and deletes the temporary objects that no write of this
   * process owns, and deletes the files under the prefix that no job claims. Other keys under
   * the prefix are left alone. Returns the keys (relative to the prefix) of the uploads aborted
   * and the objects deleted, each once.
   */
  async removeOrphans(keep: ReadonlySet<string>): Promise<string[]> {
    const ours = (key: string) => {
      const relative = key.slice(this.prefix.length);
      return relative.startsWith(PARTIAL) || isFileName(relative);
    };
    // Collected before anything is deleted, so that no listing runs over keys it changes.
    const uploads: { key: string; uploadId: string }[] = [];
    for await (const upload of listUploads(this.client, this.bucket, this.prefix)) {
      if (ours(upload.key) && !this.#active.has(upload.key)) uploads.push(upload);
    }
    const removed = new Set<string>();
    for (const { key, uploadId } of uploads) {
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }))
        .catch((error: unknown) => {
          if (!isNotFound(error)) throw error;
        });
      // An upload is what a process that died while writing leaves behind: it is named like the
      // objects, unless it was a copy onto a file that a job claims (that file stays).
      const relative = key.slice(this.prefix.length);
      if (!keep.has(relative)) removed.add(relative);
    }

    const orphans: string[] = [];
    for await (const key of listKeys(this.client, this.bucket, this.prefix)) {
      const relative = key.slice(this.prefix.length);
      const partial = relative.startsWith(PARTIAL) && !this.#active.has(key);
      if (partial || (isFileName(relative) && !keep.has(relative))) orphans.push(key);
    }
    // One DeleteObject each, not DeleteObjects: that one needs a Content-MD5 or checksum header
    // that S3-compatible stores disagree about, and orphans are few.
    for (const key of orphans) {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
      removed.add(key.slice(this.prefix.length));
    }
    return [...removed];
  }

  /**
   * A presigned GetObject URL that saves the file as `filename` (`response-content-disposition`)
   * with its content type; `undefined` with `proxy: true` or `presign: false`.
   */
  async downloadUrl(
    name: string,
    options: { filename: string; contentType: string; expiresInSeconds: number },
  ): Promise<string | undefined> {
    if (!this.#presign) return undefined;
    const command = new GetObjectCommand({
      Bucket: this.bucket,
      Key: this.keyOf(name),
      // The extension as the handler passes it (`.csv`, `.ndjson.gz`): the name's part after the
      // job id, which has no dot.
      ResponseContentDisposition: attachmentDisposition(options.filename, name.slice(name.indexOf('.'))),
      ResponseContentType: options.contentType,
    });
    return getSignedUrl(this.client, command, {
      expiresIn: this.#presign.expiresInSeconds ?? options.expiresInSeconds,
    });
  }
}
