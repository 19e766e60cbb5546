// The public surface of @spark-export/s3. Everything exported here is covered by semver.

// A client for S3-compatible stores (MinIO, R2, Ceph, LocalStack): checksums only where required.
export { type CreateS3ClientOptions, createS3Client } from './client.js';
// The storage: job files in a bucket, presigned downloads.
export { S3ExportStorage, type S3ExportStorageOptions } from './s3-export-storage.js';
