/** Durable file writes: a reader sees the old content or the new, never a torn one, even after kill -9 or power loss. */
import { promises as fs, constants } from 'node:fs';
import { dirname, basename, join } from 'node:path';

/** An open file, as far as a durable write uses it (node's FileHandle is one). */
export interface DurableFile {
  writeFile(data: string | Uint8Array): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The file-system calls a durable write makes. Production uses `realFs`; a test passes a
 * layer that records the order of write, fsync and rename (or makes one of them fail).
 */
export interface DurableFs {
  open(path: string, flags: number, mode?: number): Promise<DurableFile>;
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; absent is not an error. */
  rm(path: string): Promise<void>;
}

export const realFs: DurableFs = {
  open: (path, flags, mode) => fs.open(path, flags, mode),
  rename: (from, to) => fs.rename(from, to),
  rm: (path) => fs.rm(path, { force: true }),
};

let seq = 0;

/** Writes `data` to a temporary file, fsyncs it, renames it over `path`, and fsyncs the directory. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600, fsys: DurableFs = realFs): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${seq++}.tmp`);
  const fh = await fsys.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await fsys.rm(tmp);
    throw e;
  }
  await fh.close();
  try {
    await fsys.rename(tmp, path);
  } catch (e) {
    await fsys.rm(tmp);
    throw e;
  }
  await syncDir(dir, fsys);
}

/** Fsyncs a directory, so a rename in it survives a power loss. */
export async function syncDir(dir: string, fsys: DurableFs = realFs): Promise<void> {
  const dh = await fsys.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Reads a file, or undefined when it does not exist. */
export async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
