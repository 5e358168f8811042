/** The build step that makes the bundles ASCII (src/bin/ascii.ts) keeps what the code means. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runInNewContext } from 'node:vm';
import { asciiOnly } from '../../src/bin/ascii';

const isAscii = (s: string) => [...s].every((c) => c.charCodeAt(0) < 0x80);

test('every character past 0x7f becomes an escape that means the same in strings, templates, regular expressions and names', () => {
  const code = [
    'const café = "pino – redact";',
    'const tpl = `  → at ${café.length} ✖`;',
    'const re = /[✖→]+/u.test("x✖→") && /😀/.test("a😀") && /[😀]/u.test("😀");',
    "const astral = '😀'.length + '😀'.codePointAt(0);",
    'const evenSlashes = "\\\\–";',
    'JSON.stringify([café, tpl, re, astral, evenSlashes, "½⅓".normalize("NFKD")]);',
  ].join('\n');
  const out = asciiOnly(code);
  assert.ok(isAscii(out), out);
  assert.notEqual(out, code);
  assert.equal(runInNewContext(out), runInNewContext(code));
  assert.match(out, /pino \\u2013 redact/);
});

test('ASCII code comes back as it was', () => {
  const code = 'var a = "plain", b = /x\\u2013/; // nothing to do';
  assert.equal(asciiOnly(code), code);
});

test('an escape that would change meaning stops the build, naming the file and the offset', () => {
  // "\–" is the character itself; written as "\\u2013" it would be six characters
  assert.throws(() => asciiOnly('x = "a\\–"', 'build/weft/index.js'), /build\/weft\/index\.js: offset 7: a backslash before U\+2013/);
  // a tag sees the raw text, which would hold the escape
  assert.throws(() => asciiOnly('x = String.raw`→`', 'b.js'), /b\.js: offset 15: U\+2192 in a tagged template/);
  assert.throws(() => asciiOnly('x = tag`a ${1} →`', 'b.js'), /tagged template/);
  // an untagged template is cooked: the escape means the same
  assert.equal(runInNewContext(asciiOnly('`a ${1} →`')), 'a 1 →');
});
