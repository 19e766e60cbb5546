import { createHash, randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  HeadObjectCommand,
  type HeadObjectCommandOutput,
  ListMultipartUploadsCommand,
  paginateListObjectsV2,
} from '@aws-sdk/client-s3';
import type { StorageWrite } from '@spark-export/core';
import { afterAll, beforeAll } from 'vitest';
import { S3ExportStorage, type S3ExportStorageOptions } from '../../src/index.js';
import { type FakeS3, type FakeS3Options, startFakeS3 } from './fake-s3.js';

export const MiB = 1024 * 1024;

/** A fresh job id, as the manager makes them. */
export function jobId(): string {
  return `exp_${randomBytes(16).toString('base64url')}`;
}

/** `bytes` of recognisable content: every 8-byte word spells its own offset. */
export function content(bytes: number): Buffer {
  const buffer = Buffer.alloc(bytes);
  for (let offset = 0; offset < bytes; offset += 8) {
    buffer.write(offset.toString(36).padStart(8, '.').slice(-8), offset, 'latin1');
  }
  return buffer;
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Writes `data` into a write in 64 KiB chunks, as an export does, and ends it. */
export async function writeAll(write: StorageWrite, data: Buffer): Promise<void> {
  async function* chunks() {
    for (let offset = 0; offset < data.length; offset += 64 * 1024)
      yield data.subarray(offset, offset + 64 * 1024);
  }
  await pipeline(chunks, write.stream);
}

let prefixes = 0;

/**
 * One fake S3 for the file's tests (started before, stopped after), and storages on it that
 * each get a prefix of their own, so that tests never see each other's objects. A contract
 * suite for `ExportStorage` plugs in with `makeStorage`.
 */
export function useFakeS3(options: FakeS3Options = {}) {
  let fake: FakeS3 | undefined;
  beforeAll(async () => {
    fake = await startFakeS3(options);
  });
  afterAll(async () => {
    await fake?.stop();
  });
  const s3 = (): FakeS3 => {
    if (!fake) throw new Error('The fake S3 is started in beforeAll');
    return fake;
  };
  return {
    s3,
    makeStorage(storageOptions: Partial<S3ExportStorageOptions> = {}): S3ExportStorage {
      return new S3ExportStorage({
        client: s3().client,
        bucket: s3().bucket,
        prefix: `t${++prefixes}/`,
        partSize: 5 * MiB,
        ...storageOptions,
      });
    },
    /** Keys under the storage's prefix, relative to it. */
    async keys(storage: S3ExportStorage): Promise<string[]> {
      const found: string[] = [];
      const pages = paginateListObjectsV2(
        { client: s3().client },
        { Bucket: storage.bucket, Prefix: storage.prefix },
      );
      for await (const page of pages) {
        for (const object of page.Contents ?? []) found.push(object.Key!.slice(storage.prefix.length));
      }
      return found.sort();
    },
    /** Multipart uploads in progress under the storage's prefix, through the S3 API. */
    async uploads(storage: S3ExportStorage): Promise<string[]> {
      const found: string[] = [];
      let markers: { KeyMarker?: string; UploadIdMarker?: string } = {};
      for (;;) {
        const page = await s3().client.send(
          new ListMultipartUploadsCommand({ Bucket: storage.bucket, Prefix: storage.prefix, ...markers }),
        );
        for (const upload of page.Uploads ?? []) found.push(upload.Key!.slice(storage.prefix.length));
        if (!page.IsTruncated) return found.sort();
        markers = { KeyMarker: page.NextKeyMarker, UploadIdMarker: page.NextUploadIdMarker };
      }
    },
    async head(storage: S3ExportStorage, name: string): Promise<HeadObjectCommandOutput> {
      return s3().client.send(new HeadObjectCommand({ Bucket: storage.bucket, Key: storage.keyOf(name) }));
    },
    /** Requests to keys under the storage's prefix since `from` (an index into `requests`). */
    requestsOf(storage: S3ExportStorage, from = 0) {
      return s3()
        .requests.slice(from)
        .filter((request) => request.path.startsWith(`/${storage.bucket}/${storage.prefix}`));
    },
  };
}
