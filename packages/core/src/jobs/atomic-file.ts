import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';

/**
 * Writes `text` to `target` atomically: a temp file beside it is written, fsynced and renamed
 * over the old one, so a crash leaves either the old or the new content, never half of it. A
 * failed write (a full disk fails the write or the sync) leaves no temp file behind.
 */
export async function writeFileAtomic(target: string, text: string): Promise<void> {
  const temp = `${target}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const handle = await open(temp, 'wx');
    try {
      await handle.writeFile(text);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true }).catch(() => {});
    throw error;
  }
}
