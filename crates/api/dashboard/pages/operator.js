// Operator (users of the admin account with the role admin or owner): connectors with live health and counters,
// a simulated connector's mode; routes and "which route would this number take"; accounts.

import { h, fill, api, num, when, notice, explain, field, table, every } from '../lib.js';

const MODES = ['healthy', 'reject_all', 'disconnected', 'slow'];

export function operator() {
  const status = h('div');
  const connectors = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const routes = h('div');
  const accounts = h('div');
  const answer = h('div', { 'aria-live': 'polite' });

  async function loadConnectors() {
    try {
      const found = await api('GET', '/v1/connectors');
      fill(connectors, table([
        { title: 'Connector', cell: (c) => c.name },
        { title: 'Kind', cell: (c) => c.kind },
        { title: 'Health', cell: (c) => (!c.health ? h('span', { class: 'badge' }, 'not in force')
          : c.health.up ? h('span', { class: 'badge s-delivered', 'data-health': c.name }, 'up')
            : h('span', { class: 'badge s-failed', 'data-health': c.name }, `down${c.health.next_probe_in_ms ? `, probe in ${Math.ceil(c.health.next_probe_in_ms / 1000)} s` : ''}`)) },
        { title: 'Submitted', cell: (c) => num(c.counters ? c.counters.submitted : null), class: 'n' },
        { title: 'Accepted', cell: (c) => num(c.counters ? c.counters.accepted : null), class: 'n' },
        { title: 'Temporary errors', cell: (c) => num(c.counters ? c.counters.temporary_errors : null), class: 'n' },
        { title: 'In flight', cell: (c) => num(c.counters ? c.counters.in_flight : null), class: 'n' },
        { title: 'Pace', cell: (c) => (c.throughput ? `${c.throughput}/s` : '–') },
        { title: 'Mode', cell: (c) => {
          if (c.kind !== 'sim') return '–';
          const pick = h('select', { 'aria-label': `Mode of ${c.name}`, name: `mode-${c.name}`, onchange: async () => {
            try {
              await api('PATCH', `/v1/connectors/${encodeURIComponent(c.name)}`, { mode: pick.value });
              fill(status, notice('ok', `${c.name} is now ${pick.value}.`));
              loadConnectors();
            } catch (e) {
              fill(status, notice('error', explain(e)));
            }
          } }, MODES.map((m) => h('option', { value: m, selected: (c.mode || 'healthy') === m }, m)));
          return pick;
        } },
      ], found.data, 'No connectors.'));
    } catch (e) {
      fill(connectors, notice('error', explain(e)));
    }
  }

  async function loadRest() {
    try {
      const [r, a] = await Promise.all([api('GET', '/v1/routes'), api('GET', '/v1/accounts')]);
      fill(routes, table([
        { title: 'Route', cell: (x) => x.name },
        { title: 'Matches', cell: (x) => JSON.stringify(x.match || {}) },
        { title: 'Connectors', cell: (x) => (x.connectors || []).map((c) => `${c.name}${c.priority ? ` (priority ${c.priority})` : ''}${c.price !== undefined && c.price !== null ? ` @ ${c.price}` : ''}`).join(', ') },
      ], r.data, 'No routes: everything goes to the default connector.'));
      fill(accounts, table([
        { title: 'Account', cell: (x) => x.name },
        { title: 'Id', cell: (x) => x.id },
        { title: 'Senders', cell: (x) => x.sender_policy || '' },
        { title: 'Created', cell: (x) => when(x.created_at) },
      ], a.data));
    } catch (e) {
      fill(routes, notice('error', explain(e)));
    }
  }

  const to = h('input', { type: 'tel', name: 'resolve_to', required: true, placeholder: '+447700900123' });
  const resolve = h('form', { class: 'inline-form', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const r = await api('GET', `/v1/routes/resolve?to=${encodeURIComponent(to.value.trim())}`);
      const price = r.price === null || r.price === undefined ? '' : ` at ${r.price}`;
      const said = { connector: `Route ${r.route} → ${r.connector}${price}`, unavailable: `Route ${r.route}: no connector up`, no_route: 'No route matches' }[r.decision] || r.decision;
      const why = Array.isArray(r.why) ? r.why : [r.why].filter(Boolean);
      fill(answer, h('p', { class: 'resolved' }, said), h('ul', {}, why.map((x) => h('li', {}, typeof x === 'string' ? x : JSON.stringify(x)))));
    } catch (e) {
      fill(answer, notice('error', explain(e)));
    }
  } }, field('Which route would this number take?', to), h('button', { type: 'submit' }, 'Ask'));

  const page = h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Operator')), status,
    h('section', { class: 'card' }, h('h2', {}, 'Connectors'), connectors),
    h('section', { class: 'card' }, h('h2', {}, 'Routes'), resolve, answer, routes),
    h('section', { class: 'card' }, h('h2', {}, 'Accounts'), accounts));
  loadConnectors();
  loadRest();
  every(page, 2_000, loadConnectors);
  return page;
}
