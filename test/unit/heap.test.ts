import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MinHeap } from '../../src/common/heap';

test('MinHeap pops in priority order whatever the pushes and pops between them', () => {
  // each op: a number to push, or null for a pop; checked against a sorted list
  fc.assert(
    fc.property(fc.array(fc.option(fc.integer({ min: -50, max: 50 }), { nil: null }), { maxLength: 200 }), (ops) => {
      const h = new MinHeap<number>();
      const model: number[] = [];
      for (const op of ops) {
        if (op === null) {
          model.sort((a, b) => a - b);
          assert.equal(h.pop(), model.shift());
        } else {
          h.push(op, op);
          model.push(op);
        }
        assert.equal(h.size, model.length);
        assert.equal(h.peek(), model.length ? Math.min(...model) : Infinity);
      }
    }),
    { numRuns: 500 },
  );
});
