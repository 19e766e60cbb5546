import type { Readable, Writable } from 'node:stream';

/** A file being written: nothing is visible under `name` until `commit()` succeeds. */
export interface StorageWrite {
  /** The name the file will have once committed (derived from the job id only). */
  readonly name: string;
  /** Where the export writes its bytes; the export ends it. */
  readonly stream: Writable;
  /** Publishes the file durably (a rename on disk, a completed upload in object storage). Called once, after `stream` finished. */
  commit(file: { bytes: number; sha256: string; contentType: string }): Promise<void>;
  /** Throws away what was written (AbortMultipartUpload, remove the partial file). Safe after a failed commit. */
  abort(): Promise<void>;
}

/**
 * The seam for where export files live. The built-in {@link LocalExportStorage} writes into a
 * directory; object storage (S3) can stand in for it. Nothing above this interface knows about
 * paths, partial files or renames.
 */
export interface ExportStorage {
  /** Prepares the storage (create the directory, check the bucket). */
  open(): Promise<void>;
  /**
   * Starts writing the file of a job. `extension` is e.g. `csv` or `ndjson.gz`. `replace` is
   * set when an earlier run of the job started (its process died, or a queue moved the job to
   * another process): a partial write it left under this job's name is discarded, not an error.
   */
  createWrite(
    jobId: string,
    file: { extension: string; contentType: string; replace?: boolean },
  ): Promise<StorageWrite>;
  /** The committed file's size, or `undefined` when there is none. */
  stat(name: string): Promise<{ bytes: number } | undefined>;
  /**
   * The file's bytes, or the inclusive byte range `start..end`.
   * @throws when the file does not exist (anything: the caller answers 410)
   */
  read(name: string, range?: { start: number; end: number }): Promise<Readable>;
  remove(name: string): Promise<void>;
  /**
   * Removes partial writes left by a crash and committed files that no job claims (`keep`
   * holds the names of files that jobs claim). Returns the names removed.
   */
  removeOrphans(keep: ReadonlySet<string>): Promise<string[]>;
  /**
   * A URL from which a client downloads the file directly (a presigned object URL), or
   * `undefined` to have the bytes served through the HTTP handler.
   */
  downloadUrl?(
    name: string,
    options: { filename: string; contentType: string; expiresInSeconds: number },
  ): Promise<string | undefined>;
}
