// Exact decimal arithmetic on the wire's decimal strings ("1.16501").
// Money never goes through binary floats here: a value is a BigInt and a scale.
// Only the chart converts to Number, and only to draw.

const DEC_RE = /^([+-])?(\d+)(?:\.(\d+))?$/;

/** Parse a decimal string (or number/bigint) into {n, s} (value = n / 10^s), or null. */
export function parse(value) {
  if (value === null || value === undefined) return null;
  const m = DEC_RE.exec(String(value).trim());
  if (!m) return null;
  const frac = m[3] || "";
  let n = BigInt(m[2] + frac);
  if (m[1] === "-") n = -n;
  return { n, s: frac.length };
}

export function isDecimal(value) {
  return parse(value) !== null;
}

function align(a, b) {
  const s = Math.max(a.s, b.s);
  return [a.n * 10n ** BigInt(s - a.s), b.n * 10n ** BigInt(s - b.s), s];
}

function format({ n, s }) {
  const neg = n < 0n;
  let digits = (neg ? -n : n).toString();
  if (s > 0) {
    digits = digits.padStart(s + 1, "0");
    digits = `${digits.slice(0, -s)}.${digits.slice(-s)}`;
  }
  return (neg ? "-" : "") + digits;
}

function binary(a, b, op) {
  const x = parse(a);
  const y = parse(b);
  if (!x || !y) return null;
  return op(x, y);
}

/** a - b as an exact decimal string (null when either is not a decimal). */
export function sub(a, b) {
  return binary(a, b, (x, y) => {
    const [p, q, s] = align(x, y);
    return format({ n: p - q, s });
  });
}

export function add(a, b) {
  return binary(a, b, (x, y) => {
    const [p, q, s] = align(x, y);
    return format({ n: p + q, s });
  });
}

export function mul(a, b) {
  return binary(a, b, (x, y) => format({ n: x.n * y.n, s: x.s + y.s }));
}

/** -1, 0 or 1; null when either is not a decimal. */
export function cmp(a, b) {
  return binary(a, b, (x, y) => {
    const [p, q] = align(x, y);
    return p < q ? -1 : p > q ? 1 : 0;
  });
}

export function sign(a) {
  const x = parse(a);
  if (!x) return null;
  return x.n < 0n ? -1 : x.n > 0n ? 1 : 0;
}

/** Round half away from zero to `places` decimals (display only). */
export function round(a, places) {
  const x = parse(a);
  if (!x) return null;
  if (x.s <= places) {
    return format({ n: x.n * 10n ** BigInt(places - x.s), s: places });
  }
  const drop = 10n ** BigInt(x.s - places);
  const neg = x.n < 0n;
  const abs = neg ? -x.n : x.n;
  let q = abs / drop;
  if ((abs % drop) * 2n >= drop) q += 1n;
  return format({ n: neg ? -q : q, s: places });
}

/** "+4.85" / "-1.20" / "0.00": a signed display of a decimal string. */
export function signed(a, places = null) {
  const text = places === null ? String(a) : round(a, places);
  if (text === null) return String(a);
  const sg = sign(text);
  return sg > 0 && !text.startsWith("+") ? `+${text}` : text;
}

/** Sum of decimal strings; null if any is not a decimal. */
export function sum(values) {
  let total = "0";
  for (const v of values) {
    total = add(total, v);
    if (total === null) return null;
  }
  return total;
}
