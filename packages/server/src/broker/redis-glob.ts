/**
 * Redis glob patterns (PSUBSCRIBE's `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, `\x`) as a matcher, so the
 * node can tell which of its local channels a bridge pattern covers. Patterns are operator input.
 */
export function redisGlobMatcher(pattern: string): (name: string) => boolean {
  let re = '^';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*') re += '[\\s\\S]*';
    else if (c === '?') re += '[\\s\\S]';
    else if (c === '\\' && i + 1 < pattern.length) re += escape(pattern[++i] as string);
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end === -1) {
        re += escape(c);
        continue;
      }
      let body = pattern.slice(i + 1, end);
      const negate = body.startsWith('^');
      if (negate) body = body.slice(1);
      re += '[' + (negate ? '^' : '') + body.replace(/[\\\]^]/g, '\\$&') + ']';
      i = end;
    } else re += escape(c);
  }
  const compiled = new RegExp(re + '$');
  return (name) => compiled.test(name);
}

function escape(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}
