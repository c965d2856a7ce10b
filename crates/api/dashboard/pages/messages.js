// Messages: sent or received, filtered by status, number, sender and time, a page at a time; and one message
// with its journey as a timeline.

import { h, fill, api, num, when, whenExact, notice, explain, field, table, every } from '../lib.js';
import { atLeast } from '../app.js';

const STATUSES = ['scheduled', 'queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed', 'expired', 'canceled'];

function badge(status) {
  return h('span', { class: `badge s-${status}` }, status);
}

export function messages() {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const direction = h('select', { name: 'direction' }, h('option', { value: 'outbound' }, 'Sent'), h('option', { value: 'inbound' }, 'Received'));
  const status = h('select', { name: 'status' }, h('option', { value: '' }, 'Any'), STATUSES.map((s) => h('option', { value: s }, s)));
  const to = h('input', { type: 'search', name: 'to', placeholder: '+15551234567', value: params.get('to') || '' });
  const from = h('input', { type: 'search', name: 'from', value: params.get('from') || '' });
  const since = h('input', { type: 'date', name: 'since' });
  const results = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  let cursors = [null];

  async function load(cursor) {
    const q = new URLSearchParams({ limit: '50' });
    const inbound = direction.value === 'inbound';
    if (!inbound && status.value) q.set('status', status.value);
    if (to.value.trim()) q.set('to', to.value.trim());
    if (from.value.trim()) q.set('from', from.value.trim());
    if (since.value) q.set('since', new Date(`${since.value}T00:00:00`).toISOString());
    if (cursor) q.set('cursor', cursor);
    try {
      const page = await api('GET', `${inbound ? '/v1/inbound' : '/v1/messages'}?${q}`);
      const pager = h('div', { class: 'pager' },
        h('button', { type: 'button', disabled: cursors.length < 2, onclick: () => {
          cursors.pop();
          load(cursors[cursors.length - 1]);
        } }, 'Newer'),
        h('button', { type: 'button', disabled: !page.next_cursor, onclick: () => {
          cursors.push(page.next_cursor);
          load(page.next_cursor);
        } }, 'Older'));
      fill(results, table([
        { title: 'When', cell: (m) => h('a', { href: `#/messages/${m.id}` }, when(m.created_at)) },
        { title: 'Status', cell: (m) => badge(m.status) },
        { title: inbound ? 'From' : 'To', cell: (m) => (inbound ? m.from : m.to) },
        { title: inbound ? 'To' : 'From', cell: (m) => (inbound ? m.to : m.from) },
        { title: 'Text', cell: (m) => h('span', { class: 'clip' }, m.body) },
        { title: 'Parts', cell: (m) => num(m.segments), class: 'n' },
      ], page.data, 'No messages match.'), pager);
    } catch (e) {
      fill(results, notice('error', explain(e)));
    }
  }

  const form = h('form', { class: 'filters', role: 'search', onsubmit: (ev) => {
    ev.preventDefault();
    cursors = [null];
    load(null);
  } },
  field('Direction', direction), field('Status', status), field('To', to), field('From', from), field('Since', since),
  h('button', { type: 'submit', class: 'primary' }, 'Search'));

  const page = h('section', {},
    h('div', { class: 'heading' }, h('h1', {}, 'Messages'), atLeast('member') ? h('a', { class: 'button', href: '#/send' }, 'Send a message') : null),
    form, results);
  load(null);
  return page;
}

/** One message: what it is, and its journey oldest first. */
export function message(id) {
  const body = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const page = h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Message'), h('a', { href: '#/messages' }, 'All messages')), body);

  async function load() {
    try {
      const m = await api('GET', `/v1/messages/${encodeURIComponent(id)}`);
      const facts = [
        ['Status', badge(m.status)],
        ['To', m.to],
        ['From', m.from],
        ['Encoding', `${m.encoding}, ${m.segments} part${m.segments === 1 ? '' : 's'}`],
        ['Category', m.category],
        ['Connector', m.connector || '–'],
        ['Carrier id', m.carrier_id || '–'],
        ['Price', m.price === null || m.price === undefined ? '–' : num(m.price)],
        ['Error', m.error_code || '–'],
        ['Reference', m.reference || '–'],
        ['Created', when(m.created_at)],
        ['Id', m.id],
      ];
      const cancelable = ['scheduled', 'queued'].includes(m.status) && atLeast('member');
      const status = h('div');
      fill(body,
        h('div', { class: 'columns' },
          h('section', { class: 'card' },
            h('h2', {}, 'Text'), h('p', { class: 'sms' }, m.body),
            h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
            cancelable ? h('button', { type: 'button', class: 'danger', onclick: async () => {
              try {
                await api('DELETE', `/v1/messages/${encodeURIComponent(m.id)}`);
                load();
              } catch (e) {
                fill(status, notice('error', explain(e)));
              }
            } }, 'Cancel this message') : null,
            status),
          h('section', { class: 'card' },
            h('h2', {}, 'Journey'),
            h('ol', { class: 'timeline' }, (m.events || []).map((e) =>
              h('li', {}, badge(e.status), h('time', { datetime: e.at }, whenExact(e.at)), e.detail ? h('p', {}, e.detail) : null))))));
    } catch (e) {
      fill(body, notice('error', explain(e)));
    }
  }
  load();
  every(page, 5_000, load);
  return page;
}
