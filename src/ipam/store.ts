/**
 * Persistence of the router's IPAM state, with group commit.
 *
 * Every change is on disk (written, fsynced, renamed into place) before the request that made
 * it is answered, so a kill -9 at any moment loses no allocation the plugin was told about and
 * can never hand one address to two pods. Changes that arrive while a write is in flight share
 * the next write, which keeps 50 concurrent ADDs at a handful of fsyncs.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { readIfExists, realFs, writeFileAtomic, type DurableFs } from '../common/fsutil';

export class JsonStore<T> {
  private writing: Promise<void> | undefined;
  private next: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } | undefined;

  /**
   * `snapshot` is called at write time, so one write carries every change made before it.
   * `fsys` is the file-system layer of the writes (a test's recording one, or the real one).
   */
  constructor(
    readonly path: string,
    private readonly snapshot: () => T,
    private readonly fsys: DurableFs = realFs,
  ) {}

  static async open<T>(dir: string, file: string, snapshot: () => T, fsys: DurableFs = realFs): Promise<{ store: JsonStore<T>; data: T | undefined }> {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const path = join(dir, file);
    const text = await readIfExists(path);
    let data: T | undefined;
    if (text !== undefined) {
      try {
        data = JSON.parse(text) as T;
      } catch (e) {
        throw new Error(`${path} is not valid JSON (${(e as Error).message}); move it aside to start afresh`);
      }
    }
    return { store: new JsonStore(path, snapshot, fsys), data };
  }

  /** Resolves once a write that started after this call has completed. */
  commit(): Promise<void> {
    if (!this.next) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.next = { promise, resolve, reject };
      void this.pump();
      return promise;
    }
    return this.next.promise;
  }

  private async pump(): Promise<void> {
    if (this.writing) return;
    while (this.next) {
      const batch = this.next;
      this.next = undefined;
      try {
        // a snapshot that throws fails this batch (never leaves its callers waiting)
        this.writing = writeFileAtomic(this.path, JSON.stringify(this.snapshot()), 0o600, this.fsys);
        await this.writing;
        batch.resolve();
      } catch (e) {
        batch.reject(e);
      } finally {
        this.writing = undefined;
      }
    }
  }
}
