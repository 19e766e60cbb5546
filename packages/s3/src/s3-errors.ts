/** What the SDK throws for a missing object or upload: `NotFound` (HEAD has no body), `NoSuchKey`, `NoSuchUpload`. */
export function isNotFound(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { name, $metadata } = error as { name?: unknown; $metadata?: { httpStatusCode?: number } };
  return (
    name === 'NotFound' ||
    name === 'NoSuchKey' ||
    name === 'NoSuchUpload' ||
    $metadata?.httpStatusCode === 404
  );
}
