import { ListMultipartUploadsCommand, paginateListObjectsV2, type S3Client } from '@aws-sdk/client-s3';

/** Every object key under `prefix`, page by page. */
export async function* listKeys(client: S3Client, bucket: string, prefix: string): AsyncGenerator<string> {
  for await (const page of paginateListObjectsV2({ client }, { Bucket: bucket, Prefix: prefix })) {
    for (const object of page.Contents ?? []) if (object.Key !== undefined) yield object.Key;
  }
}

/** Every multipart upload in progress under `prefix`, page by page (the SDK has no paginator for these). */
export async function* listUploads(
  client: S3Client,
  bucket: string,
  prefix: string,
): AsyncGenerator<{ key: string; uploadId: string; initiated: Date | undefined }> {
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  for (;;) {
    const page = await client.send(
      new ListMultipartUploadsCommand({
        Bucket: bucket,
        Prefix: prefix,
        ...(keyMarker === undefined ? {} : { KeyMarker: keyMarker }),
        ...(uploadIdMarker === undefined ? {} : { UploadIdMarker: uploadIdMarker }),
      }),
    );
    for (const upload of page.Uploads ?? []) {
      if (upload.Key !== undefined && upload.UploadId !== undefined) {
        yield { key: upload.Key, uploadId: upload.UploadId, initiated: upload.Initiated };
      }
    }
    if (!page.IsTruncated) return;
    // A truncated page whose markers do not move on would repeat itself forever.
    if (page.NextKeyMarker === keyMarker && page.NextUploadIdMarker === uploadIdMarker) return;
    keyMarker = page.NextKeyMarker;
    uploadIdMarker = page.NextUploadIdMarker;
  }
}
