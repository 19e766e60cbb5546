import { ExportManager, FileJobStore } from '@spark-export/core';
import { createS3Client, S3ExportStorage } from '@spark-export/s3';

export function createManager(directory: string, endpoint = 'http://127.0.0.1:9000') {
  // An S3-compatible store (MinIO here). For AWS itself, pass `new S3Client({ region })`.
  const client = createS3Client({
    endpoint,
    credentials: {
      accessKeyId: process.env.S3_ACCESS_KEY_ID ?? '',
      secretAccessKey: process.env.S3_SECRET_ACCESS_KEY ?? '',
    },
  });
  const storage = new S3ExportStorage({ client, bucket: 'exports', prefix: 'jobs/' });
  // Job records stay in a directory; the files go to the bucket.
  const manager = new ExportManager({ store: new FileJobStore(directory), storage, maxConcurrent: 5 });
  manager.defineDataset('orders', {
    columns: [{ name: 'id' }, { name: 'total' }],
    source: async function* () {
      for (let id = 1; id <= 3; id++) yield { id, total: id * 10 };
    },
  });
  return manager; // then mount it: createExportRouter(manager), exportPlugin, createExportHandler(manager)
}
