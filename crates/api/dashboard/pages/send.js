// Send: one text, to a number or a contact, from one of the account's senders, now or at a time; with a live count
// of characters, encoding, parts and cost as the server would plan it.

import { h, fill, api, num, notice, explain, field } from '../lib.js';

export function send() {
  const status = h('div');
  const to = h('input', { type: 'tel', name: 'to', required: true, placeholder: '+15551234567', autocomplete: 'off', list: 'contact-options' });
  const contacts = h('datalist', { id: 'contact-options' });
  const from = h('input', { type: 'text', name: 'from', required: true, list: 'sender-options', autocomplete: 'off' });
  const senders = h('datalist', { id: 'sender-options' });
  const text = h('textarea', { name: 'body', rows: 5, required: true });
  const counter = h('p', { class: 'counter', 'aria-live': 'polite' }, '0 characters');
  const when = h('input', { type: 'datetime-local', name: 'send_at' });

  // The account's senders, to pick from (typing another is allowed: the server says whether it may be used).
  Promise.all([api('GET', '/v1/numbers'), api('GET', '/v1/sender-ids')]).then(([numbers, ids]) => {
    fill(senders,
      numbers.data.map((n) => h('option', { value: n.number })),
      ids.data.filter((s) => s.status === 'active').map((s) => h('option', { value: s.sender_id })));
    if (!from.value && numbers.data[0]) from.value = numbers.data[0].number;
  }).catch(() => {});

  let searching = 0;
  to.addEventListener('input', async () => {
    const q = to.value.trim();
    const mine = ++searching;
    if (q.length < 2) return;
    try {
      const found = await api('GET', `/v1/contacts?limit=8&q=${encodeURIComponent(q)}`);
      if (mine !== searching) return;
      fill(contacts, found.data.map((c) => h('option', { value: c.phone }, c.name ? `${c.name} (${c.phone})` : c.phone)));
    } catch (e) {
      // The picker is a help; the number typed is what is sent.
    }
    plan();
  });

  let planned = 0;
  let timer = null;
  function plan() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const mine = ++planned;
      if (!text.value) return fill(counter, '0 characters');
      try {
        const body = { body: text.value };
        if (to.value.trim().startsWith('+')) body.to = to.value.trim();
        const p = await api('POST', '/v1/messages/plan', body);
        if (mine !== planned) return;
        const cost = p.cost === null || p.cost === undefined ? '' : ` · cost ${num(p.cost)}`;
        fill(counter, `${num(p.characters)} characters · ${p.encoding} · ${p.segments} part${p.segments === 1 ? '' : 's'}${cost}`);
      } catch (e) {
        if (mine === planned) fill(counter, explain(e));
      }
    }, 150);
  }
  text.addEventListener('input', plan);

  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    fill(status);
    const body = { to: to.value.trim(), from: from.value.trim(), body: text.value };
    if (when.value) body.send_at = new Date(when.value).toISOString();
    try {
      const m = await api('POST', '/v1/messages', body);
      fill(status, notice('ok', `Accepted: ${m.status}. `), h('a', { href: `#/messages/${m.id}` }, 'Follow it'));
      text.value = '';
      plan();
    } catch (e) {
      fill(status, notice('error', explain(e)));
    }
  } },
  field('To', to, 'A number in international form, or start typing a contact\'s name.'), contacts,
  field('From', from, 'One of your numbers or sender IDs.'), senders,
  field('Text', text), counter,
  field('Send at', when, 'Leave empty to send now. Quiet hours and opt-outs apply as for every send.'),
  status,
  h('button', { type: 'submit', class: 'primary' }, 'Send'));
  return h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Send a message')), form);
}
