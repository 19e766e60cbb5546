import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CreateMultipartUploadCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { attachmentDisposition } from '@spark-export/core/http';
import { describeExportStorageContract } from '@spark-export/core/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
// What the handler passes as the extension; not on core's public surface.
import { fileExtension } from '../../core/src/http/download.js';
import { createS3Client, S3ExportStorage } from '../src/index.js';
import { content, jobId, MiB, readAll, sha256, useFakeS3, writeAll } from './support/helpers.js';

// Listings answer two entries a page, so that every listing the storage makes is paginated.
const { s3, makeStorage, keys, uploads, head, requestsOf } = useFakeS3({ pageSize: 2 });

describeExportStorageContract('S3ExportStorage', () => makeStorage(), {
  // A write abandoned in this process is still this process's upload, which removeOrphans()
  // leaves alone; and a small one has sent nothing yet (the SDK puts bodies under a part in one
  // PutObject at the end). What a process that died mid-write leaves is an open multipart
  // upload under `.partial/`, with a part.
  leavePartial: (storage, id) => leaveCrashedUpload(storage, id),
  // The store refuses the publishing copy, after the upload completed.
  breakCommit: async (storage, write) => {
    const target = `/${storage.bucket}/${storage.keyOf(write.name)}`;
    s3().failNext((request) => request.operation === 'CopyObject' && request.path === target);
  },
});

/** What a process that died while uploading `id`'s file leaves: a multipart upload with one part. */
async function leaveCrashedUpload(storage: S3ExportStorage, id: string): Promise<void> {
  const { client, bucket } = s3();
  const Key = `${storage.prefix}.partial/${id}.csv.0123456789ab`;
  const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key }));
  await client.send(
    new UploadPartCommand({ Bucket: bucket, Key, UploadId, PartNumber: 1, Body: content(1000) }),
  );
}

describe('S3ExportStorage writes', () => {
  it('streams a file as a multipart upload and publishes it, with its sha256, only on commit', async () => {
    const storage = makeStorage();
    const data = content(12 * MiB);
    const id = jobId();
    const write = await storage.createWrite(id, { extension: 'csv', contentType: 'text/csv; charset=utf-8' });
    expect(write.name).toBe(`${id}.csv`);
    const from = s3().requests.length;

    await writeAll(write, data);
    await s3().partsStored(2, id);
    // Written, not committed: nothing under the final key.
    expect(await storage.stat(write.name)).toBeUndefined();
    expect((await keys(storage)).filter((key) => !key.startsWith('.partial/'))).toEqual([]);

    await write.commit({ bytes: data.length, sha256: sha256(data), contentType: 'text/csv; charset=utf-8' });

    expect(await storage.stat(write.name)).toEqual({ bytes: data.length });
    expect(await keys(storage)).toEqual([write.name]);
    expect(await uploads(storage)).toEqual([]);
    const object = await head(storage, write.name);
    expect(object.Metadata).toEqual({ sha256: sha256(data) });
    expect(object.ContentType).toBe('text/csv; charset=utf-8');
    expect(object.ContentEncoding).toBeUndefined();
    expect(sha256(await readAll(await storage.read(write.name)))).toBe(sha256(data));

    const operations = requestsOf(storage, from).map((request) => request.operation);
    expect(operations.filter((operation) => operation === 'UploadPart')).toHaveLength(3);
    expect(operations).toContain('CompleteMultipartUpload');
    const copy = requestsOf(storage, from).find((request) => request.operation === 'CopyObject');
    expect(copy?.headers['x-amz-metadata-directive']).toBe('REPLACE');
    expect(copy?.headers['x-amz-copy-source']).toMatch(
      /^\/?exports\/t\d+\/\.partial\/exp_[\w-]{22}\.csv\.[0-9a-f]{12}$/,
    );
  });

  it('reads no further ahead of the upload than the parts in flight', async () => {
    const storage = makeStorage({ partSize: 5 * MiB, queueSize: 2 });
    const id = jobId();
    const isPart = (request: { operation: string; path: string }) =>
      request.operation === 'UploadPart' && request.path.includes(id);
    const release = s3().hold(isPart);
    const write = await storage.createWrite(id, { extension: 'csv', contentType: 'text/csv' });
    const data = content(40 * MiB);
    let pulled = 0;
    async function* source() {
      for (let offset = 0; offset < data.length; offset += 64 * 1024) {
        pulled += 64 * 1024;
        yield data.subarray(offset, offset + 64 * 1024);
      }
    }
    const piping = pipeline(source, write.stream);

    // Both parts in flight (held by the server): the upload takes no more, so neither does the export.
    await s3().arrived(2, isPart);
    for (let turn = 0; turn < 50; turn++) await new Promise((resolve) => setImmediate(resolve));
    expect(pulled).toBeLessThanOrEqual(2 * 5 * MiB + MiB);

    release();
    await piping;
    await write.commit({ bytes: data.length, sha256: sha256(data), contentType: 'text/csv' });
    expect(await storage.stat(write.name)).toEqual({ bytes: data.length });
  });

  it('abort() after two uploaded parts aborts the multipart upload and leaves no object', async () => {
    const storage = makeStorage();
    const id = jobId();
    const write = await storage.createWrite(id, { extension: 'csv', contentType: 'text/csv' });
    const from = s3().requests.length;
    // More than two parts written, the stream left open, as an export that fails midway.
    const data = content(11 * MiB);
    for (let offset = 0; offset < data.length; offset += 64 * 1024) {
      if (!write.stream.write(data.subarray(offset, offset + 64 * 1024))) {
        await new Promise((resolve) => write.stream.once('drain', resolve));
      }
    }
    await s3().partsStored(2, id);
    expect(await uploads(storage)).toHaveLength(1);

    await write.abort();

    expect(await uploads(storage)).toEqual([]);
    expect(await s3().openUploads()).toEqual([]);
    expect(await keys(storage)).toEqual([]);
    expect(requestsOf(storage, from).map((request) => request.operation)).toContain('AbortMultipartUpload');
    await write.abort(); // twice is harmless
  });

  it('abort() after a failed commit removes the uploaded temporary object', async () => {
    const storage = makeStorage();
    const data = content(64 * 1024);
    const write = await storage.createWrite(jobId(), {
      extension: 'ndjson.gz',
      contentType: 'application/gzip',
    });
    await writeAll(write, data);
    s3().failNext((request) => request.operation === 'CopyObject');

    await expect(
      write.commit({ bytes: data.length, sha256: sha256(data), contentType: 'application/gzip' }),
    ).rejects.toThrow(/Injected/);
    expect((await keys(storage))[0]).toMatch(/^\.partial\//);
    await write.abort();

    expect(await keys(storage)).toEqual([]);
    expect(await storage.stat(write.name)).toBeUndefined();
  });

  it('fails the export’s writes when the upload fails, instead of leaving them waiting for drain', async () => {
    const storage = makeStorage();
    const id = jobId();
    const write = await storage.createWrite(id, { extension: 'csv', contentType: 'text/csv' });
    s3().failNext((request) => request.operation === 'UploadPart' && request.path.includes(id));

    await expect(writeAll(write, content(40 * MiB))).rejects.toThrow(/Injected/);
    await write.abort();

    expect(await uploads(storage)).toEqual([]);
    expect(await keys(storage)).toEqual([]);
  });

  it('refuses a commit whose uploaded object does not have the bytes written', async () => {
    const storage = makeStorage();
    const data = content(1000);
    const write = await storage.createWrite(jobId(), { extension: 'csv', contentType: 'text/csv' });
    await writeAll(write, data);

    await expect(
      write.commit({ bytes: 1001, sha256: sha256(data), contentType: 'text/csv' }),
    ).rejects.toThrow(/has 1000 bytes, not the 1001 written/);
    await write.abort();
    expect(await keys(storage)).toEqual([]);
  });

  it('publishes a file over the CopyObject limit with a multipart copy (UploadPartCopy)', async () => {
    // The limit lowered from S3's 5 GiB to 5 MiB, so that a 12 MiB file takes the large-file path.
    const storage = makeStorage({ multipartCopyThreshold: 5 * MiB });
    const data = content(12 * MiB + 3);
    const write = await storage.createWrite(jobId(), {
      extension: 'csv.gz',
      contentType: 'application/gzip',
    });
    const from = s3().requests.length;
    await writeAll(write, data);
    await write.commit({ bytes: data.length, sha256: sha256(data), contentType: 'application/gzip' });

    const operations = requestsOf(storage, from).map((request) => request.operation);
    expect(operations).not.toContain('CopyObject');
    expect(operations.filter((operation) => operation === 'UploadPartCopy')).toHaveLength(3);
    expect(sha256(await readAll(await storage.read(write.name)))).toBe(sha256(data));
    const object = await head(storage, write.name);
    expect(object.Metadata).toEqual({ sha256: sha256(data) });
    expect(object.ContentType).toBe('application/gzip');
    expect(object.ContentEncoding).toBeUndefined();
    expect(await keys(storage)).toEqual([write.name]);
    expect(await uploads(storage)).toEqual([]);
  });

  it('aborts a multipart copy that fails and leaves the final key empty', async () => {
    const storage = makeStorage({ multipartCopyThreshold: 5 * MiB });
    const data = content(11 * MiB);
    const write = await storage.createWrite(jobId(), { extension: 'csv', contentType: 'text/csv' });
    await writeAll(write, data);
    s3().failNext((request) => request.operation === 'UploadPartCopy');

    await expect(
      write.commit({ bytes: data.length, sha256: sha256(data), contentType: 'text/csv' }),
    ).rejects.toThrow(/Injected/);
    await write.abort();

    expect(await uploads(storage)).toEqual([]);
    expect(await keys(storage)).toEqual([]);
  });
});

describe('S3ExportStorage reads', () => {
  it('reads a file whole or an inclusive byte range; stat and read of a missing file', async () => {
    const storage = makeStorage();
    const data = content(100_000);
    const write = await storage.createWrite(jobId(), { extension: 'csv', contentType: 'text/csv' });
    await writeAll(write, data);
    await write.commit({ bytes: data.length, sha256: sha256(data), contentType: 'text/csv' });

    expect(await readAll(await storage.read(write.name))).toEqual(data);
    expect(await readAll(await storage.read(write.name, { start: 8, end: 23 }))).toEqual(
      data.subarray(8, 24),
    );

    await storage.remove(write.name);
    expect(await storage.stat(write.name)).toBeUndefined();
    await expect(storage.read(write.name)).rejects.toThrow();
    await storage.remove(write.name); // removing a missing file is no error
  });

  it('reads the first byte alone (bytes=0-0), as S3 serves it', async () => {
    const storage = makeStorage();
    const data = content(1000);
    const write = await storage.createWrite(jobId(), { extension: 'csv', contentType: 'text/csv' });
    await writeAll(write, data);
    await write.commit({ bytes: data.length, sha256: sha256(data), contentType: 'text/csv' });
    expect(await readAll(await storage.read(write.name, { start: 0, end: 0 }))).toEqual(data.subarray(0, 1));
  });

  it('fails a read whose range the store answers with other bytes, instead of serving them', async () => {
    const name = `${jobId()}.csv`;
    const answer = (ContentRange: string | undefined) => {
      const body = Readable.from([Buffer.from('the whole object')]);
      const storage = new S3ExportStorage({
        client: { send: async () => ({ Body: body, ContentRange }) } as unknown as S3Client,
        bucket: 'exports',
      });
      return { storage, body };
    };
    for (const [ContentRange, said] of [
      ['bytes 0-999/1000', '"bytes 0-999/1000"'],
      [undefined, 'no Content-Range'],
    ] as const) {
      const { storage, body } = answer(ContentRange);
      await expect(storage.read(name, { start: 0, end: 0 })).rejects.toThrow(
        `The object store answered the range 0-0 of ${name} with ${said}`,
      );
      expect(body.destroyed).toBe(true);
    }
    const { storage } = answer('bytes 10-19/1000');
    await expect(storage.read(name, { start: 10, end: 19 })).resolves.toBeDefined();
  });

  it('refuses names that are not stored export file names; stat() finds no file under one, unasked', async () => {
    const storage = makeStorage();
    const from = s3().requests.length;
    expect(await storage.stat('../other/secret')).toBeUndefined();
    expect(await storage.stat(`sub/../${jobId()}.csv`)).toBeUndefined();
    expect(requestsOf(storage, from)).toEqual([]);
    await expect(storage.read('../other/secret')).rejects.toThrow(/Expected a stored export file name/);
    await expect(storage.remove('../other/secret')).rejects.toThrow(/Expected a stored export file name/);
    await expect(
      storage.createWrite('exp_short', { extension: 'csv', contentType: 'text/csv' }),
    ).rejects.toThrow(/Expected a job id/);
  });

  it('open() checks that the bucket can be reached', async () => {
    await expect(makeStorage().open()).resolves.toBeUndefined();
    await expect(makeStorage({ bucket: 'no-such-bucket' }).open()).rejects.toThrow(
      'Cannot reach the export bucket "no-such-bucket"',
    );
  });
});

describe('S3ExportStorage re-runs', () => {
  it("aborts a dead run's upload of the same job on a write with replace, and only stale ones of that job", async () => {
    const id = jobId();
    const other = jobId();
    const storage = makeStorage({ staleUploadMs: 0 });
    // Uploads begun "now": too young for the default staleUploadMs, old enough for 0.
    await leaveCrashedUpload(storage, id);
    await leaveCrashedUpload(storage, other);
    const ofJob = async () => (await s3().openUploads()).filter((upload) => upload.key.includes(id));
    const young = await makeStorage({ prefix: storage.prefix }).createWrite(id, {
      extension: 'csv',
      contentType: 'text/csv',
      replace: true,
    });
    expect(await ofJob()).toHaveLength(1);
    await young.abort();

    const write = await storage.createWrite(id, { extension: 'csv', contentType: 'text/csv', replace: true });
    expect(await ofJob()).toEqual([]);
    expect((await s3().openUploads()).map((upload) => upload.key)).toContain(
      `${storage.prefix}.partial/${other}.csv.0123456789ab`,
    );

    // The new write is untouched by it and publishes as usual.
    const data = content(1000);
    await writeAll(write, data);
    await write.commit({ bytes: data.length, sha256: sha256(data), contentType: 'text/csv' });
    expect((await storage.stat(`${id}.csv`))?.bytes).toBe(data.length);
  });
});

describe('S3ExportStorage.removeOrphans', () => {
  it('removes unclaimed files, temporary objects and stale uploads, and nothing else', async () => {
    const storage = makeStorage();
    const { client, bucket } = s3();
    const put = (key: string) =>
      client.send(new PutObjectCommand({ Bucket: bucket, Key: `${storage.prefix}${key}`, Body: 'x' }));
    const claimed = `${jobId()}.csv`;
    const unclaimed = [`${jobId()}.ndjson`, `${jobId()}.json.gz`];
    for (const key of [
      claimed,
      ...unclaimed,
      '.partial/a.csv.0123',
      '.partial/b.csv.4567',
      'notes.txt',
      'sub/x.csv',
    ]) {
      await put(key);
    }
    // Three uploads left by a crash, listed two a page.
    for (const key of ['.partial/c.csv.1', '.partial/d.csv.2', '.partial/e.csv.3']) {
      await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `${storage.prefix}${key}` }));
    }
    // A write of this process in progress, with a part uploaded.
    const id = jobId();
    const active = await storage.createWrite(id, { extension: 'csv', contentType: 'text/csv' });
    const activeData = content(6 * MiB);
    active.stream.write(activeData);
    await s3().partsStored(1, id);

    const removed = await storage.removeOrphans(new Set([claimed]));

    expect(removed.sort()).toEqual(
      [
        ...unclaimed,
        '.partial/a.csv.0123',
        '.partial/b.csv.4567',
        '.partial/c.csv.1',
        '.partial/d.csv.2',
        '.partial/e.csv.3',
      ].sort(),
    );
    expect(await keys(storage)).toEqual([claimed, 'notes.txt', 'sub/x.csv'].sort());
    expect(await uploads(storage)).toEqual([expect.stringMatching(new RegExp(`^\\.partial/${id}\\.csv\\.`))]);

    // The write it left alone still publishes.
    active.stream.end();
    await new Promise((resolve) => active.stream.once('finish', resolve));
    await active.commit({ bytes: activeData.length, sha256: sha256(activeData), contentType: 'text/csv' });
    expect(await storage.stat(active.name)).toEqual({ bytes: activeData.length });
  });
});

describe('S3ExportStorage.downloadUrl', () => {
  it('presigns a GetObject that saves under the file name, with the content type', async () => {
    const storage = makeStorage();
    const data = content(1000);
    const write = await storage.createWrite(jobId(), { extension: 'csv', contentType: 'text/csv' });
    await writeAll(write, data);
    await write.commit({ bytes: data.length, sha256: sha256(data), contentType: 'text/csv' });

    const url = await storage.downloadUrl(write.name, {
      filename: 'Bestellungen März.csv',
      contentType: 'text/csv; charset=utf-8',
      expiresInSeconds: 120,
    });
    expect(new URL(url!).searchParams.get('X-Amz-Expires')).toBe('120');
    const response = await fetch(url!);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-disposition')).toBe(
      `attachment; filename="Bestellungen Marz.csv"; filename*=UTF-8''Bestellungen%20M%C3%A4rz.csv`,
    );
    expect(response.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(Buffer.from(await response.arrayBuffer())).toEqual(data);
  });

  it('saves under the name the HTTP handler gives the file, for any file name and format', async () => {
    const storage = makeStorage();
    // As the manager names stored files and downloads: `<job id>.<format>[.gz]`, and the
    // requested name with that extension.
    const formats = fc.constantFrom(
      { format: 'csv', compression: undefined },
      { format: 'ndjson', compression: 'gzip' },
      { format: 'json', compression: undefined },
    );
    const names = fc.oneof(
      fc.string({ unit: 'binary' }),
      fc.string({
        unit: fc.constantFrom('a', ' ', '.', '%', '"', '\\', '/', 'ü', '＂', '／', '＼', '\r', '€', '(', '*'),
      }),
    );
    await fc.assert(
      fc.asyncProperty(formats, names, async ({ format, compression }, requested) => {
        const extension = fileExtension(format, compression);
        const filename = requested.toLowerCase().endsWith(extension) ? requested : `${requested}${extension}`;
        const url = await storage.downloadUrl(`${jobId()}${extension}`, {
          filename,
          contentType: 'text/plain',
          expiresInSeconds: 60,
        });
        expect(new URL(url!).searchParams.get('response-content-disposition')).toBe(
          attachmentDisposition(filename, extension),
        );
      }),
      { numRuns: 500 },
    );
    // A name of dots alone: what is left before the extension is `download`, not nothing.
    const url = await storage.downloadUrl(`${jobId()}.csv`, {
      filename: '....csv',
      contentType: 'text/csv',
      expiresInSeconds: 60,
    });
    expect(new URL(url!).searchParams.get('response-content-disposition')).toBe(
      'attachment; filename="download.csv"',
    );
  });

  it('takes presign.expiresInSeconds over the manager’s; none with proxy: true or presign: false', async () => {
    const options = { filename: 'a.csv', contentType: 'text/csv', expiresInSeconds: 300 };
    const name = `${jobId()}.csv`;
    const url = await makeStorage({ presign: { expiresInSeconds: 30 } }).downloadUrl(name, options);
    expect(new URL(url!).searchParams.get('X-Amz-Expires')).toBe('30');
    expect(await makeStorage({ proxy: true }).downloadUrl(name, options)).toBeUndefined();
    expect(await makeStorage({ presign: false }).downloadUrl(name, options)).toBeUndefined();
  });
});

describe('S3ExportStorage options', () => {
  it('checks its options', () => {
    const base = { client: s3().client, bucket: 'b' };
    expect(() => new S3ExportStorage({ ...base, partSize: MiB })).toThrow(
      'Expected partSize to be an integer from 5242880 to 5368709120, got 1048576 (number)',
    );
    expect(() => new S3ExportStorage({ ...base, queueSize: 0 })).toThrow(
      /Expected queueSize to be an integer/,
    );
    expect(() => new S3ExportStorage({ ...base, bucket: '' })).toThrow(
      'Expected bucket to be a non-empty string, got "" (string)',
    );
    expect(() => new S3ExportStorage({ ...base, prefix: '/exports/' })).toThrow(/Expected prefix/);
    expect(() => new S3ExportStorage({ ...base, presign: { expiresInSeconds: 604_801 } })).toThrow(
      /Expected presign.expiresInSeconds to be an integer from 1 to 604800/,
    );
    expect(() => new S3ExportStorage({ ...base, client: {} as S3Client })).toThrow(
      /Expected client to be an S3Client/,
    );
  });
});

describe('createS3Client', () => {
  it('computes and validates checksums only where S3 requires them', async () => {
    const client = createS3Client({ endpoint: s3().endpoint });
    expect(await client.config.requestChecksumCalculation()).toBe('WHEN_REQUIRED');
    expect(await client.config.responseChecksumValidation()).toBe('WHEN_REQUIRED');
    expect(await client.config.forcePathStyle).toBe(true);
    expect(await client.config.region()).toBe('us-east-1');
    client.destroy();
    expect(() => createS3Client({ endpoint: 's3.example.com' })).toThrow(
      'Expected endpoint to be an http(s) URL, got "s3.example.com" (string)',
    );
  });

  it('sends no flexible-checksum headers, where a default client does', async () => {
    const { bucket, endpoint } = s3();
    const credentials = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
    const checksumHeaders = (from: number) =>
      s3()
        .requests.slice(from)
        .flatMap((request) =>
          Object.keys(request.headers).filter((header) => /^x-amz-(checksum-|sdk-checksum-)/.test(header)),
        );

    const storage = makeStorage();
    let from = s3().requests.length;
    const data = content(6 * MiB);
    const write = await storage.createWrite(jobId(), { extension: 'csv', contentType: 'text/csv' });
    await writeAll(write, data);
    await write.commit({ bytes: data.length, sha256: sha256(data), contentType: 'text/csv' });
    expect(s3().requests.length).toBeGreaterThan(from);
    expect(checksumHeaders(from)).toEqual([]);

    const plain = new S3Client({ endpoint, region: 'us-east-1', forcePathStyle: true, credentials });
    from = s3().requests.length;
    await plain.send(new PutObjectCommand({ Bucket: bucket, Key: `${storage.prefix}plain`, Body: 'x' }));
    const upload = await plain.send(
      new CreateMultipartUploadCommand({
        Bucket: bucket,
        Key: `${storage.prefix}plain-mpu`,
        ChecksumAlgorithm: 'CRC32',
      }),
    );
    await plain.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: `${storage.prefix}plain-mpu`,
        UploadId: upload.UploadId,
        PartNumber: 1,
        Body: 'x',
      }),
    );
    plain.destroy();
    expect(checksumHeaders(from)).not.toEqual([]);
  });
});
