/**
 * Build step (build.sh): rewrites a bundle so that it holds only ASCII, each character past
 * 0x7f written as a `\uXXXX` escape.
 *
 * Why: V8 keeps a script's source for as long as its functions live (lazy compilation reads it
 * again), and a single character past Latin-1 makes it store the whole source at two bytes a
 * character. The router's bundle is 5.7 MB of code with a few hundred such characters (pino's
 * en dash, zod's arrows), so it cost 11.5 MB of heap instead of 5.7; the plugin's snapshot
 * carried its 270 KB twice over too.
 *
 * The escape means the same character in every place a minified bundle holds one: string,
 * template and regular-expression literals and identifiers (characters past 0xffff come as
 * two code units, which a string or a regular expression reads as the same pair). Two places
 * would change meaning, so the step refuses them instead: a character right after a
 * backslash (`"\–"` is the character itself; `"\\u2013"` would be six) and a tagged template
 * (its raw text would hold the escape; found by parsing the bundle with TypeScript).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import ts from 'typescript';

/** `code` with every character past 0x7f escaped; throws where an escape would change meaning. */
export function asciiOnly(code: string, name = 'bundle'): string {
  let out = '';
  let from = 0;
  let inTagged: ((at: number) => boolean) | undefined;
  for (let i = 0; i < code.length; i++) {
    const c = code.charCodeAt(i);
    if (c < 0x80) continue;
    let slashes = 0;
    for (let j = i - 1; j >= 0 && code.charCodeAt(j) === 0x5c; j--) slashes++;
    if (slashes % 2 === 1) throw new Error(`${name}: offset ${i}: a backslash before U+${hex(c)}; its escape would change meaning`);
    if ((inTagged ??= taggedTemplates(code))(i)) throw new Error(`${name}: offset ${i}: U+${hex(c)} in a tagged template, whose raw text would change`);
    out += code.slice(from, i) + `\\u${hex(c)}`;
    from = i + 1;
  }
  return out + code.slice(from);
}

const hex = (c: number) => c.toString(16).padStart(4, '0');

/** Whether offset `at` lies in the template of a tagged template (parsed as JavaScript). */
function taggedTemplates(code: string): (at: number) => boolean {
  const spans: [number, number][] = [];
  const file = ts.createSourceFile('bundle.js', code, ts.ScriptTarget.Latest, false, ts.ScriptKind.JS);
  // a minified bundle nests deeply (long comma chains): walk with a stack of our own
  const todo: ts.Node[] = [file];
  for (let n = todo.pop(); n; n = todo.pop()) {
    if (ts.isTaggedTemplateExpression(n)) spans.push([n.template.getStart(file), n.template.end]);
    ts.forEachChild(n, (child) => void todo.push(child));
  }
  return (at) => spans.some(([from, to]) => at >= from && at < to);
}

// `node src/bin/ascii.ts FILE...` (build.sh): rewrites each file in place
if (import.meta.main) {
  for (const file of process.argv.slice(2)) writeFileSync(file, asciiOnly(readFileSync(file, 'utf8'), file));
}
