// What every page uses: building elements, calling the API with the session, formatting, and the chart.
// Nothing here loads from another host; text from the server always goes in as text, never as HTML.

/** An element: h('button', {class: 'primary', onclick: f}, 'Save'). Children are nodes, strings or arrays. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    // Through the CSSOM: the pages' Content-Security-Policy refuses style attributes.
    else if (k === 'style') Object.assign(el.style, v);
    else if (k === 'value') el.value = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces what an element holds. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
/** An SVG element. */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  append(el, children);
  return el;
}

/** An error the API answered: its HTTP status, machine-readable code and sentence. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The signed-in session: user, account and the CSRF token every change carries. */
export const session = { current: null };

/** Calls the API with the session cookie; a change carries X-CSRF-Token. Answers the JSON (or null for 204). */
export async function api(method, path, body, extra = {}) {
  const headers = { Accept: 'application/json', ...(extra.headers || {}) };
  // A file goes as it is (its type given by the caller); anything else as JSON.
  const raw = body instanceof FormData || body instanceof Blob;
  if (body !== undefined && !raw && !headers['Content-Type']) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session.current) headers['X-CSRF-Token'] = session.current.csrf_token;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'unreachable', 'The server cannot be reached. Is smsgate running?');
  }
  if (resp.status === 204) return null;
  const type = resp.headers.get('content-type') || '';
  const data = type.includes('json') ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const err = (data && data.error) || {};
    if (resp.status === 401 && path !== '/v1/session' && session.current) {
      session.current = null;
      location.hash = '#/sign-in';
    }
    throw new ApiError(resp.status, err.code || 'error', err.message || `HTTP ${resp.status}`);
  }
  return data;
}

/** A number with thousands separators. */
export function num(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: 2 });
}

/** A fraction as a percentage. */
export function pct(f) {
  if (f === null || f === undefined) return '–';
  return `${(f * 100).toFixed(1)} %`;
}

/** Seconds, shortly. */
export function secs(v) {
  if (v === null || v === undefined) return '–';
  return v < 1 ? `${Math.round(v * 1000)} ms` : `${v.toFixed(1)} s`;
}

/** A time from the API (RFC 3339) in the browser's zone. */
export function when(t) {
  if (!t) return '–';
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'short' });
}

/** A time to the second, for a journey's steps. */
export function whenExact(t) {
  if (!t) return '–';
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'medium' });
}

/** A message (error or success) in a page: role=alert for errors so screen readers say it. */
export function notice(kind, text) {
  return h('p', { class: `notice ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

/** The sentence of an error for people, with its code. */
export function explain(e) {
  return e instanceof ApiError ? `${e.message} (${e.code})` : String(e && e.message ? e.message : e);
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('small', {}, hint) : null);
}

/** A table: columns [{title, cell(row) -> node|string, class?}], rows. */
export function table(columns, rows, empty = 'Nothing yet.') {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col', class: c.class }, c.title)))),
      h('tbody', {}, rows.map((r) => h('tr', {}, columns.map((c) => h('td', { class: c.class }, c.cell(r))))))));
}

/**
 * A line chart of series over time, in SVG: series [{name, color, values: [number|null]}], labels for the x
 * axis (one a point). Accessible as a figure with a caption and a table of the same numbers for screen readers.
 */
export function lineChart(title, labels, series, { height = 220, format = num } = {}) {
  const width = 720;
  const pad = { l: 56, r: 12, t: 12, b: 28 };
  const all = series.flatMap((x) => x.values).filter((v) => v !== null && v !== undefined);
  const max = niceMax(Math.max(1, ...all));
  const n = Math.max(1, labels.length - 1);
  const x = (i) => pad.l + (i * (width - pad.l - pad.r)) / n;
  const y = (v) => pad.t + (height - pad.t - pad.b) * (1 - v / max);
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': title, class: 'chart' });
  // Lines at 0, the middle (when it is a whole number) and the top.
  for (const v of max % 2 === 0 || max > 10 ? [0, max / 2, max] : [0, max]) {
    svg.append(s('line', { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: 'grid' }));
    svg.append(s('text', { x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, format(v)));
  }
  const step = Math.max(1, Math.ceil(labels.length / 6));
  labels.forEach((l, i) => {
    if (i % step === 0) svg.append(s('text', { x: x(i), y: height - 8, 'text-anchor': 'middle', class: 'axis' }, l));
  });
  for (const ser of series) {
    const pts = ser.values.map((v, i) => (v === null || v === undefined ? null : `${x(i)},${y(v)}`)).filter(Boolean);
    if (pts.length > 1) svg.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: ser.color, 'stroke-width': 2 }));
    ser.values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      svg.append(s('circle', { cx: x(i), cy: y(v), r: 2.5, fill: ser.color }, s('title', {}, `${ser.name} ${labels[i]}: ${format(v)}`)));
    });
  }
  const legend = h('ul', { class: 'legend' }, series.map((ser) =>
    h('li', {}, h('span', { class: 'swatch', style: { background: ser.color } }), ser.name)));
  const numbers = h('table', { class: 'sr-only' },
    h('caption', {}, title),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'time'), series.map((ser) => h('th', { scope: 'col' }, ser.name)))),
    h('tbody', {}, labels.map((l, i) => h('tr', {}, h('th', { scope: 'row' }, l), series.map((ser) => h('td', {}, format(ser.values[i])))))));
  return h('figure', { class: 'chart-box' }, h('figcaption', {}, title), svg, legend, numbers);
}

/** The smallest 1, 2 or 5 times a power of ten at or above `v`: the top of a chart's axis. */
function niceMax(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((m) => m >= v);
}

/** Runs `f` every `ms` while `el` is on the page; stops once it is gone. */
export function every(el, ms, f) {
  const timer = setInterval(() => {
    if (!el.isConnected) clearInterval(timer);
    else f();
  }, ms);
}
