// Inbox: conversations with their unread counts, newest first; one thread to read and answer in place. New
// inbound messages appear without a reload (the list and the open thread are asked again every 3 s).

import { h, fill, api, whenExact, when, notice, explain, every } from '../lib.js';
import { atLeast } from '../app.js';

export function inbox() {
  const list = h('ul', { class: 'threads', 'aria-label': 'Conversations' }, h('li', { class: 'loading' }, 'Loading…'));
  const thread = h('div', { class: 'thread-box' }, h('p', { class: 'muted' }, 'Choose a conversation.'));
  let open = (location.hash.split('/')[2] || '').split('?')[0] || null;
  let shown = '';

  async function loadList() {
    try {
      const found = await api('GET', '/v1/conversations?limit=100');
      fill(list, found.data.length ? found.data.map((c) => h('li', { class: c.id === open ? 'open' : '' },
        h('a', { href: `#/inbox/${c.id}`, onclick: (ev) => { ev.preventDefault(); select(c.id); } },
          h('span', { class: 'who-line' }, h('strong', {}, c.name || c.phone), c.unread ? h('span', { class: 'badge unread', 'aria-label': `${c.unread} unread` }, String(c.unread)) : null),
          h('span', { class: 'clip muted' }, c.last_message ? c.last_message.body : ''),
          h('small', { class: 'muted' }, `${c.phone} → ${c.number} · ${when(c.last_activity_at)}`)))) : h('li', { class: 'empty' }, 'No conversations yet: they begin when a contact texts one of your numbers.'));
    } catch (e) {
      fill(list, h('li', {}, notice('error', explain(e))));
    }
  }

  async function loadThread() {
    if (!open) return;
    try {
      const [c, msgs] = await Promise.all([api('GET', `/v1/conversations/${open}`), api('GET', `/v1/conversations/${open}/messages?limit=100`)]);
      const key = msgs.data.map((m) => `${m.id}:${m.status}`).join(',');
      if (key === shown && thread.querySelector('form')) return;
      shown = key;
      const text = h('textarea', { name: 'reply', rows: 2, required: true, 'aria-label': 'Reply' });
      const status = h('div');
      const reply = atLeast('member') ? h('form', { class: 'reply', onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await api('POST', `/v1/conversations/${open}/messages`, { body: text.value });
          text.value = '';
          shown = '';
          loadThread();
          loadList();
        } catch (e) {
          fill(status, notice('error', explain(e)));
        }
      } }, text, h('button', { type: 'submit', class: 'primary' }, 'Send'), status) : null;
      const typed = thread.querySelector('textarea');
      const draft = typed ? typed.value : '';
      fill(thread,
        h('h2', {}, c.name || c.phone, h('small', { class: 'muted' }, ` ${c.phone} ↔ ${c.number}`)),
        h('ol', { class: 'bubbles' }, msgs.data.map((m) => h('li', { class: m.direction === 'inbound' ? 'in' : 'out' },
          h('p', {}, m.body),
          h('small', {}, `${whenExact(m.created_at)}${m.direction === 'outbound' ? ` · ${m.status}` : ''}`)))),
        reply);
      if (draft) thread.querySelector('textarea').value = draft;
      const last = thread.querySelector('.bubbles li:last-child');
      if (last) last.scrollIntoView({ block: 'nearest' });
      if (c.unread) {
        await api('POST', `/v1/conversations/${open}/read`).catch(() => {});
        loadList();
      }
    } catch (e) {
      fill(thread, notice('error', explain(e)));
    }
  }

  function select(id) {
    open = id;
    shown = '';
    history.replaceState(null, '', `#/inbox/${id}`);
    loadThread();
    loadList();
  }

  const page = h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Inbox')),
    h('div', { class: 'inbox' }, h('section', { class: 'card' }, list), h('section', { class: 'card' }, thread)));
  loadList();
  loadThread();
  every(page, 3_000, () => { loadList(); loadThread(); });
  return page;
}
