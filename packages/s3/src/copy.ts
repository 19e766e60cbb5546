import {
  AbortMultipartUploadCommand,
  type CompletedPart,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  type S3Client,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';

/** The largest object one CopyObject can copy (S3's limit, 5 GiB); larger ones are copied in parts. */
export const MAX_COPY_OBJECT_BYTES = 5 * 1024 ** 3;
const MAX_COPY_PART_BYTES = 5 * 1024 ** 3;

export interface CopyRequest {
  client: S3Client;
  bucket: string;
  sourceKey: string;
  targetKey: string;
  /** The source's size. */
  bytes: number;
  contentType: string;
  /** User metadata of the copy (`x-amz-meta-*`), replacing the source's. */
  metadata: Record<string, string>;
  /** Objects larger than this are copied with UploadPartCopy. */
  multipartThreshold: number;
  /** Smallest part of a multipart copy. */
  minPartSize: number;
  /** Part copies in flight at once. */
  queueSize: number;
  /** Told the multipart upload of the target while it is open, so that orphan removal leaves it alone. */
  onUpload?: (uploadId: string | undefined) => void;
}

/** `bucket/key` as `x-amz-copy-source` wants it: URL-encoded, slashes kept. */
export function copySource(bucket: string, key: string): string {
  return `${bucket}/${encodeURIComponent(key).replace(/%2F/g, '/')}`;
}

/**
 * Copies an object onto another key with new metadata and content type, server-side: one
 * CopyObject up to `multipartThreshold`, else a multipart upload of UploadPartCopy ranges,
 * aborted if any part fails.
 */
export async function copyObject(request: CopyRequest): Promise<void> {
  const { client, bucket, targetKey, bytes, contentType, metadata } = request;
  const source = copySource(bucket, request.sourceKey);
  if (bytes <= request.multipartThreshold) {
    await client.send(
      new CopyObjectCommand({
        Bucket: bucket,
        Key: targetKey,
        CopySource: source,
        MetadataDirective: 'REPLACE',
        ContentType: contentType,
        Metadata: metadata,
      }),
    );
    return;
  }

  const { UploadId } = await client.send(
    new CreateMultipartUploadCommand({
      Bucket: bucket,
      Key: targetKey,
      ContentType: contentType,
      Metadata: metadata,
    }),
  );
  if (!UploadId) throw new Error(`The object store started no multipart upload for ${targetKey}`);
  request.onUpload?.(UploadId);
  try {
    // About ten parts, within S3's part limits (5 MiB to 5 GiB, at most 10,000 parts).
    const partSize = Math.min(MAX_COPY_PART_BYTES, Math.max(request.minPartSize, Math.ceil(bytes / 10)));
    const ranges: { part: number; start: number; end: number }[] = [];
    for (let start = 0; start < bytes; start += partSize) {
      ranges.push({ part: ranges.length + 1, start, end: Math.min(start + partSize, bytes) - 1 });
    }
    const parts: CompletedPart[] = [];
    let next = 0;
    let failed = false;
    const worker = async () => {
      while (!failed && next < ranges.length) {
        const range = ranges[next++]!;
        try {
          const result = await client.send(
            new UploadPartCopyCommand({
              Bucket: bucket,
              Key: targetKey,
              UploadId,
              PartNumber: range.part,
              CopySource: source,
              CopySourceRange: `bytes=${range.start}-${range.end}`,
            }),
          );
          parts.push({ PartNumber: range.part, ETag: result.CopyPartResult?.ETag });
        } catch (error) {
          failed = true;
          throw error;
        }
      }
    };
    // Settled, not raced: the abort below must not overtake a part copy still in flight.
    const outcomes = await Promise.allSettled(
      Array.from({ length: Math.min(request.queueSize, ranges.length) }, worker),
    );
    const failure = outcomes.find((outcome) => outcome.status === 'rejected');
    if (failure) throw failure.reason;
    parts.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: targetKey,
        UploadId,
        MultipartUpload: { Parts: parts },
      }),
    );
  } catch (error) {
    // The copy failed: its parts must not linger (and be billed). If even the abort fails, the
    // next orphan removal finds the upload under the prefix.
    await client
      .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: targetKey, UploadId }))
      .catch(() => {});
    throw error;
  } finally {
    request.onUpload?.(undefined);
  }
}
