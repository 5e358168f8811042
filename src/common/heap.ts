/** A binary min-heap of items by a numeric priority (lowest first). */
export class MinHeap<T> {
  private readonly at: number[] = [];
  private readonly items: T[] = [];

  get size(): number {
    return this.at.length;
  }

  /** The lowest priority held; Infinity when empty. */
  peek(): number {
    return this.at.length ? this.at[0]! : Infinity;
  }

  push(priority: number, item: T): void {
    let i = this.at.length;
    this.at.push(priority);
    this.items.push(item);
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (this.at[up]! <= priority) break;
      this.move(up, i);
      i = up;
    }
    this.at[i] = priority;
    this.items[i] = item;
  }

  /** Removes and returns the item of the lowest priority (undefined when empty). */
  pop(): T | undefined {
    if (!this.at.length) return undefined;
    const top = this.items[0];
    const p = this.at.pop()!;
    const item = this.items.pop()!;
    const n = this.at.length;
    if (n) {
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && this.at[c + 1]! < this.at[c]!) c++;
        if (this.at[c]! >= p) break;
        this.move(c, i);
        i = c;
      }
      this.at[i] = p;
      this.items[i] = item;
    }
    return top;
  }

  private move(from: number, to: number): void {
    this.at[to] = this.at[from]!;
    this.items[to] = this.items[from]!;
  }
}
