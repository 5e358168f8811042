/**
 * How many cases a property test tries. `npm run mutate` runs the unit tests once per mutant
 * and sets WEFT_PROPERTY_RUNS_SCALE below 1 to keep that affordable (fewer cases can only let
 * more mutants survive, never hide one); every other run uses the full count.
 */
export function runs(n: number): number {
  const scale = Number(process.env.WEFT_PROPERTY_RUNS_SCALE ?? '1');
  return Math.max(5, Math.round(n * (Number.isFinite(scale) && scale > 0 ? scale : 1)));
}
