import { PassThrough } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  HeadObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { StorageWrite } from '@spark-export/core';
import { copyObject } from './copy.js';
import { isNotFound } from './s3-errors.js';

export interface WriteOptions {
  client: S3Client;
  bucket: string;
  /** The file's name, as the job records it. */
  name: string;
  /** Where the file is published by `commit()`. */
  finalKey: string;
  /** Where the bytes are uploaded first. */
  partialKey: string;
  contentType: string;
  partSize: number;
  queueSize: number;
  multipartCopyThreshold: number;
  /** Keys with an upload of this process in flight; orphan removal leaves them alone. */
  active: Set<string>;
}

/**
 * One export file on its way into the bucket: the bytes go, as they are written, into a
 * multipart upload of a temporary key (at most `queueSize` parts in flight, one more being
 * filled); `commit()` copies the finished object onto its final key with its sha256 and
 * content type, then deletes the temporary one.
 */
export function startWrite(options: WriteOptions): StorageWrite {
  const { client, bucket, name, finalKey, partialKey, active } = options;
  // The export writes into `stream`; the upload reads `body`. Two streams, not one, because the
  // upload destroys what it reads (an AbortError) when a part fails: the export must fail with
  // that part's error instead, which `uploaded` rejects with once no part is in flight.
  const stream = new PassThrough();
  const body = new PassThrough();
  // Failures surface through the export's pipeline and through commit(); without listeners a
  // late one would be an uncaught 'error'.
  stream.on('error', () => {});
  body.on('error', () => {});
  stream.pipe(body);
  // The export failed or was cancelled (its pipeline destroyed `stream`): the upload stops.
  stream.on('close', () => {
    if (!stream.readableEnded) body.destroy();
  });
  const upload = new Upload({
    client,
    params: { Bucket: bucket, Key: partialKey, Body: body, ContentType: options.contentType },
    partSize: options.partSize,
    queueSize: options.queueSize,
    // abort() aborts the upload itself, once no part is in flight any more (see there).
    leavePartsOnError: true,
  });
  active.add(partialKey);
  const uploaded = upload.done();
  // A failed upload reads no more: without this the export would wait for 'drain' forever.
  uploaded.catch((error: unknown) =>
    stream.destroy(error instanceof Error ? error : new Error(String(error))),
  );

  let state: 'writing' | 'committing' | 'committed' | 'aborted' = 'writing';
  let copyStarted = false;

  return {
    name,
    stream,

    async commit(file) {
      if (state !== 'writing') throw new Error(`Expected a write in progress to commit, got one ${state}`);
      state = 'committing';
      await uploaded;
      // A store that mangles the body (an aws-chunked upload stored as-is) is caught here, not
      // by the client that downloads a damaged file.
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: partialKey }));
      if (head.ContentLength !== file.bytes) {
        throw new Error(
          `The uploaded object ${partialKey} has ${head.ContentLength ?? 'unknown'} bytes, not the ${file.bytes} written`,
        );
      }
      // The final key gets the object only now, whole, with its sha256 (known only at the end:
      // S3 metadata cannot be changed after an upload, only given to a copy).
      copyStarted = true;
      await copyObject({
        client,
        bucket,
        sourceKey: partialKey,
        targetKey: finalKey,
        bytes: file.bytes,
        contentType: file.contentType,
        // No Content-Encoding, even for gzip: clients would then decompress what they save.
        metadata: { sha256: file.sha256 },
        multipartThreshold: options.multipartCopyThreshold,
        minPartSize: options.partSize,
        queueSize: options.queueSize,
        onUpload: (uploadId) => (uploadId ? active.add(finalKey) : active.delete(finalKey)),
      });
      state = 'committed';
      active.delete(partialKey);
      // The file is published; a temporary object left by a failed delete is an orphan that
      // removeOrphans() (run at every start) removes, so it must not fail the job.
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: partialKey })).catch(() => {});
    },

    async abort() {
      if (state === 'aborted') return;
      state = 'aborted';
      // Ends the upload's reading of the body. Not Upload.abort(): that rejects done() at once
      // and sends its AbortMultipartUpload in the background, while parts may still be in
      // flight; done() settles only once every part request has.
      stream.destroy();
      body.destroy();
      const failed = await uploaded.then(
        () => false,
        () => true,
      );
      const errors: unknown[] = [];
      const keep = (error: unknown) => {
        if (!isNotFound(error)) errors.push(error);
      };
      if (failed && upload.uploadId) {
        await client
          .send(
            new AbortMultipartUploadCommand({ Bucket: bucket, Key: partialKey, UploadId: upload.uploadId }),
          )
          .catch(keep);
      }
      // The temporary object exists when the upload completed (its commit failed later); and
      // a lost response may hide an upload that did complete. Deleting a missing key is a no-op.
      await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: partialKey })).catch(keep);
      if (copyStarted)
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: finalKey })).catch(keep);
      active.delete(partialKey);
      if (errors.length > 0) {
        throw new Error(`Could not remove the partial upload of ${name} (${partialKey})`, {
          cause: errors[0],
        });
      }
    },
  };
}
