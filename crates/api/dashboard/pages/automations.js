// Automations: the list with their counters, enable and disable; a new one or a change from a starting point
// (trigger and steps as JSON, checked by the server); one automation's runs, each contact's steps.

import { h, fill, api, num, when, whenExact, notice, explain, field, table } from '../lib.js';
import { atLeast } from '../app.js';

/** Starting points for a new automation. */
const EXAMPLES = {
  'Appointment reminder': {
    name: 'Appointment reminder',
    trigger: { type: 'date_field', field: 'data.appointment_at', offset: '-24h', events: ['appointment.booked'], cancel_events: ['appointment.canceled'], key: 'data.appointment_id' },
    steps: [{ type: 'send', from: '', body: 'Hi {{ name }}, see you {{ data.appointment_at | date("%a %d %b %H:%M") }}. Reply C to confirm.' }],
  },
  'Keyword with a question': {
    name: 'Join',
    trigger: { type: 'keyword', keyword: 'JOIN' },
    steps: [
      { type: 'send', body: 'Reply YES to get our news' },
      { type: 'wait', until: 'reply', timeout: '1h' },
      { type: 'branch', cases: [{ match: ['YES', 'Y'], steps: [{ type: 'tag', tag: 'subscriber' }, { type: 'send', body: 'Welcome!' }] }], default: [{ type: 'send', body: 'No problem.' }] },
    ],
  },
  'Order shipped': {
    name: 'Shipped',
    trigger: { type: 'event', event: 'order.shipped' },
    steps: [{ type: 'send', from: '', body: 'Order {{ data.order_id }} is on its way' }],
  },
};

export function automations() {
  const list = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const status = h('div');
  const detail = h('div');

  async function load() {
    try {
      const found = await api('GET', '/v1/automations?limit=200');
      fill(list, table([
        { title: 'Name', cell: (a) => h('button', { type: 'button', class: 'link', onclick: () => runs(a) }, a.name) },
        { title: 'Trigger', cell: (a) => `${a.trigger.type}${a.trigger.keyword ? ` ${a.trigger.keyword}` : a.trigger.event ? ` ${a.trigger.event}` : ''}` },
        { title: 'Runs', cell: (a) => num(a.stats ? a.stats.runs : null), class: 'n' },
        { title: 'Under way', cell: (a) => num(a.stats ? (a.stats.active || 0) + (a.stats.waiting || 0) : null), class: 'n' },
        { title: 'Completed', cell: (a) => num(a.stats ? a.stats.completed : null), class: 'n' },
        { title: 'Failed', cell: (a) => num(a.stats ? a.stats.failed : null), class: 'n' },
        { title: 'On', cell: (a) => (atLeast('member') ? h('button', { type: 'button', class: 'small', onclick: async () => {
          try {
            await api('POST', `/v1/automations/${a.id}/${a.enabled ? 'disable' : 'enable'}`);
            load();
          } catch (e) {
            fill(status, notice('error', explain(e)));
          }
        } }, a.enabled ? 'On: turn off' : 'Off: turn on') : a.enabled ? 'on' : 'off') },
      ], found.data, 'No automations yet.'));
    } catch (e) {
      fill(list, notice('error', explain(e)));
    }
  }

  async function runs(a) {
    const contact = h('input', { type: 'search', name: 'run_contact', placeholder: 'contact id' });
    const box = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
    async function loadRuns() {
      try {
        const q = contact.value.trim() ? `?contact_id=${encodeURIComponent(contact.value.trim())}` : '';
        const found = await api('GET', `/v1/automations/${a.id}/runs${q}`);
        load();
        fill(box, found.data.length ? h('ol', { class: 'runs' }, found.data.map((r) => h('li', { class: 'card' },
          h('p', {}, h('a', { href: `#/contacts/${r.contact_id}` }, 'The contact'), ' ', h('span', { class: 'badge' }, r.state), r.due_at ? ` · next ${when(r.due_at)}` : ''),
          r.error ? notice('error', `${r.error.message} (${r.error.code})`) : null,
          h('ol', { class: 'timeline' }, (r.steps || []).map((st) => h('li', {},
            h('span', { class: 'badge' }, `${st.step} ${st.type}`), h('time', { datetime: st.at }, whenExact(st.at)),
            h('p', {}, [st.outcome, st.text ? `“${st.text}”` : null, st.message_id ? h('a', { href: `#/messages/${st.message_id}` }, 'the text') : null].filter(Boolean).flatMap((x, i) => (i ? [' · ', x] : [x]))))))))) : h('p', { class: 'empty' }, 'No runs yet.'));
      } catch (e) {
        fill(box, notice('error', explain(e)));
      }
    }
    fill(detail, h('section', { class: 'card' },
      h('div', { class: 'heading' }, h('h2', {}, `Runs of ${a.name}`),
        atLeast('member') ? h('button', { type: 'button', onclick: () => editor(a) }, 'Copy to a new one') : null,
        atLeast('member') ? h('button', { type: 'button', class: 'danger small', onclick: async () => {
          if (!confirm(`Delete ${a.name} and its runs? What it sent stays.`)) return;
          try {
            await api('DELETE', `/v1/automations/${a.id}`);
            fill(detail);
            load();
          } catch (e) {
            fill(status, notice('error', explain(e)));
          }
        } }, 'Delete') : null),
      h('form', { class: 'inline-form', onsubmit: (ev) => { ev.preventDefault(); loadRuns(); } }, field('Contact', contact), h('button', { type: 'submit' }, 'Show')),
      box));
    loadRuns();
  }

  /** The editor: a new automation from an example, or from a copy of one that exists (which stays as it is). */
  function editor(existing) {
    const pick = h('select', { name: 'example', 'aria-label': 'Start from' }, Object.keys(EXAMPLES).map((k) => h('option', { value: k }, k)));
    const spec = (a) => JSON.stringify(a ? { name: a.name, trigger: a.trigger, steps: a.steps } : EXAMPLES[pick.value], null, 2);
    const text = h('textarea', { name: 'automation', rows: 18, spellcheck: 'false' }, spec(existing));
    pick.addEventListener('change', () => { text.value = spec(null); });
    const saved = h('div');
    fill(detail, h('form', { class: 'card', onsubmit: async (ev) => {
      ev.preventDefault();
      let body;
      try {
        body = JSON.parse(text.value);
      } catch (e) {
        return fill(saved, notice('error', `Not JSON: ${e.message}`));
      }
      try {
        const a = await api('POST', '/v1/automations', body);
        fill(status, notice('ok', `${a.name} saved and on.`));
        fill(detail);
        load();
      } catch (e) {
        fill(saved, notice('error', explain(e)));
      }
    } },
    h('h2', {}, existing ? `A new automation from ${existing.name}` : 'New automation'),
    existing ? h('p', { class: 'muted' }, `${existing.name} stays as it is; turn it off if the new one replaces it.`) : field('Start from', pick),
    field('Trigger and steps (JSON)', text, 'Triggers: keyword, event, date_field, schedule. Steps: send, wait, branch, tag, untag, add_to_list, remove_from_list, webhook. docs/automations.md has every field.'),
    saved,
    h('button', { type: 'submit', class: 'primary' }, 'Save')));
  }

  load();
  return h('section', {},
    h('div', { class: 'heading' }, h('h1', {}, 'Automations'), atLeast('member') ? h('button', { type: 'button', class: 'primary', onclick: () => editor(null) }, 'New automation') : null),
    status, h('section', { class: 'card' }, list), detail);
}
