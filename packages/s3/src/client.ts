import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { describeValue } from './checks.js';

/** Options of {@link createS3Client}: any `S3ClientConfig`, with the endpoint required. */
export interface CreateS3ClientOptions
  extends Omit<S3ClientConfig, 'endpoint' | 'region' | 'forcePathStyle'> {
  /** The object store's URL, e.g. `http://127.0.0.1:9000` (MinIO) or `https://<account>.r2.cloudflarestorage.com`. */
  endpoint: string;
  /** The region to sign requests for; most S3-compatible stores accept any. @default 'us-east-1' */
  region?: string;
  /** Address buckets as `<endpoint>/<bucket>` rather than `<bucket>.<host>`. @default true */
  forcePathStyle?: boolean;
}

/**
 * An `S3Client` for an S3-compatible object store (MinIO, Ceph, R2, LocalStack, ...).
 *
 * Since 3.729 the AWS SDK adds CRC checksums to every upload and asks for checksummed
 * responses by default; many S3-compatible servers reject or mangle those requests
 * (`XAmzContentSHA256Mismatch`, aws-chunked bodies stored as-is). This client computes and
 * validates checksums only where the S3 API requires them (`WHEN_REQUIRED`). Against AWS itself,
 * a plain `new S3Client({ region })` is right.
 *
 * @example
 * ```ts
 * const client = createS3Client({
 *   endpoint: 'http://127.0.0.1:9000',
 *   credentials: { accessKeyId: 'minio', secretAccessKey: 'minio-secret' },
 * });
 * ```
 */
export function createS3Client(options: CreateS3ClientOptions): S3Client {
  const { endpoint, region = 'us-east-1', forcePathStyle = true, ...rest } = options;
  if (typeof endpoint !== 'string' || !/^https?:\/\//.test(endpoint)) {
    throw new TypeError(`Expected endpoint to be an http(s) URL, got ${describeValue(endpoint)}`);
  }
  return new S3Client({
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...rest,
    endpoint,
    region,
    forcePathStyle,
  });
}
