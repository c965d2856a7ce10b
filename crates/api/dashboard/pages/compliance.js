// Compliance: the numbers opted out, with where each came from; an opt-out or opt-in by hand; the account's
// keywords, replies, quiet hours and retention. GDPR export and erasure are on each contact's page.

import { h, fill, api, when, notice, explain, field, table } from '../lib.js';
import { atLeast } from '../app.js';

export function compliance() {
  const status = h('div');
  const list = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const settings = h('div');
  let cursors = [null];

  async function load(cursor) {
    try {
      const page = await api('GET', `/v1/opt-outs?limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      fill(list, table([
        { title: 'Number', cell: (o) => o.phone || '(erased)' },
        { title: 'Scope', cell: (o) => o.scope },
        { title: 'Source', cell: (o) => o.source },
        { title: 'When', cell: (o) => when(o.at) },
        { title: '', cell: (o) => (o.phone && atLeast('member') ? h('button', { type: 'button', class: 'small', onclick: async () => {
          if (!confirm(`Opt ${o.phone} back in? Do this only with the person's consent.`)) return;
          try {
            await api('DELETE', `/v1/opt-outs/${encodeURIComponent(o.phone)}`);
            fill(status, notice('ok', `${o.phone} is opted back in.`));
            load(null);
          } catch (e) {
            fill(status, notice('error', explain(e)));
          }
        } }, 'Opt back in') : '') },
      ], page.data, 'Nobody has opted out.'),
      h('div', { class: 'pager' },
        h('button', { type: 'button', disabled: cursors.length < 2, onclick: () => { cursors.pop(); load(cursors[cursors.length - 1]); } }, 'Newer'),
        h('button', { type: 'button', disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); load(page.next_cursor); } }, 'Older')));
    } catch (e) {
      fill(list, notice('error', explain(e)));
    }
  }

  async function loadSettings() {
    let s;
    try {
      s = await api('GET', '/v1/settings/compliance');
    } catch (e) {
      // Members and viewers do not see the account's settings: the section is left out for them.
      if (e.status === 403) return fill(settings);
      return fill(settings, notice('error', explain(e)));
    }
    const box = h('textarea', { name: 'settings', rows: 18, spellcheck: 'false' }, JSON.stringify(s, null, 2));
    const saved = h('div');
    fill(settings, h('form', { class: 'card', onsubmit: async (ev) => {
      ev.preventDefault();
      let parsed;
      try {
        parsed = JSON.parse(box.value);
      } catch (e) {
        return fill(saved, notice('error', `The settings must be JSON: ${e.message}`));
      }
      try {
        await api('PUT', '/v1/settings/compliance', parsed);
        fill(saved, notice('ok', 'Saved; in force on every node within five seconds.'));
      } catch (e) {
        fill(saved, notice('error', explain(e)));
      }
    } },
    h('h2', {}, 'Keywords, replies, quiet hours, retention'),
    field('Settings (JSON)', box, 'business_name, keywords, replies, auto_reply, opt_out_scope, transactional_after_opt_out, quiet_hours ([{"days": "Mon-Fri", "from": "10:00", "to": "18:00"}]), quiet_hours_transactional, retention_days. The law\'s hours apply whatever is set here.'),
    saved,
    h('button', { type: 'submit', class: 'primary' }, 'Save settings')));
  }

  const phone = h('input', { type: 'tel', name: 'phone', required: true, placeholder: '+15551234567' });
  const note = h('input', { type: 'text', name: 'note', placeholder: 'asked by phone on 3 Dec' });
  const add = atLeast('member') ? h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const r = await api('POST', '/v1/opt-outs', { phone: phone.value.trim(), note: note.value.trim() || undefined });
      fill(status, notice('ok', r.changed ? `${r.phone} is opted out; texts waiting for it were canceled.` : `${r.phone} was opted out already.`));
      phone.value = '';
      note.value = '';
      load(null);
    } catch (e) {
      fill(status, notice('error', explain(e)));
    }
  } }, h('h2', {}, 'Opt a number out'), field('Number', phone), field('Why (kept as evidence)', note), h('button', { type: 'submit', class: 'primary' }, 'Opt out')) : null;

  load(null);
  loadSettings();
  return h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Compliance')), status,
    h('section', { class: 'card' }, h('h2', {}, 'Opted out'), h('p', { class: 'muted' }, 'A STOP from a handset lands here with the message as evidence; texts to these numbers are refused on every way in.'), list),
    add, settings);
}
