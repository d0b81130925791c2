// Assertions shared by test files (no model, no addon: unit tests import it too).
import assert from 'node:assert/strict';

/** Asserts that `promise` rejects with a MinigptError of `code` whose message matches `pattern`. */
export function rejectsWith(promise, code, pattern, label = '') {
  return assert.rejects(promise, (err) => {
    assert.equal(err.code, code, `${label ? `${label}: ` : ''}expected ${code}, got ${err.code}: ${err.message}`);
    assert.equal(typeof err.message, 'string');
    if (pattern) assert.match(err.message, pattern, label);
    return true;
  });
}
