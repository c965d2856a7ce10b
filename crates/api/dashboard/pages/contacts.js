// Contacts: search and filter, one contact to edit with its consent history, GDPR export and erasure; lists and
// segments with their counts; a CSV import with a column-mapping step, a progress bar and the rows refused; export.

import { h, fill, api, when, notice, explain, field, table } from '../lib.js';
import { atLeast } from '../app.js';

/** A consent change's evidence in a line: the text the person sent, or what else was kept. */
function evidence(ev) {
  if (!ev || typeof ev !== 'object') return ev ? String(ev) : '–';
  const said = ev.text || ev.body;
  const parts = Object.entries(ev).filter(([k]) => k !== 'text' && k !== 'body').map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`);
  return [said ? `“${said}”` : null, ...parts].filter(Boolean).join(' · ') || '–';
}

function tagsOf(text) {
  return text.split(',').map((t) => t.trim()).filter(Boolean);
}

export function contacts() {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const q = h('input', { type: 'search', name: 'q', placeholder: 'number, name or email', value: params.get('q') || '' });
  const tag = h('input', { type: 'search', name: 'tag' });
  const list = h('select', { name: 'list' }, h('option', { value: '' }, 'Any'));
  const optedOut = h('select', { name: 'opted_out' }, h('option', { value: '' }, 'Any'), h('option', { value: 'false' }, 'Subscribed'), h('option', { value: 'true' }, 'Opted out'));
  const results = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const groups = h('div', { class: 'columns' });
  let cursors = [null];

  async function load(cursor) {
    const query = new URLSearchParams({ limit: '50' });
    if (q.value.trim()) query.set('q', q.value.trim());
    if (tag.value.trim()) query.set('tag', tag.value.trim());
    if (list.value) query.set('list', list.value);
    if (optedOut.value) query.set('opted_out', optedOut.value);
    if (cursor) query.set('cursor', cursor);
    try {
      const page = await api('GET', `/v1/contacts?${query}`);
      fill(results, table([
        { title: 'Number', cell: (c) => h('a', { href: `#/contacts/${c.id}` }, c.phone) },
        { title: 'Name', cell: (c) => c.name || '' },
        { title: 'Tags', cell: (c) => c.tags.join(', ') },
        { title: 'Lists', cell: (c) => String(c.lists.length), class: 'n' },
        { title: 'Consent', cell: (c) => (c.opted_out ? h('span', { class: 'badge s-failed' }, 'opted out') : h('span', { class: 'badge s-delivered' }, 'subscribed')) },
      ], page.data, 'No contacts match.'),
      h('div', { class: 'pager' },
        h('button', { type: 'button', disabled: cursors.length < 2, onclick: () => { cursors.pop(); load(cursors[cursors.length - 1]); } }, 'Previous'),
        h('button', { type: 'button', disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); load(page.next_cursor); } }, 'Next')));
    } catch (e) {
      fill(results, notice('error', explain(e)));
    }
  }

  async function loadGroups() {
    try {
      const [lists, segments] = await Promise.all([api('GET', '/v1/lists'), api('GET', '/v1/segments')]);
      fill(list, h('option', { value: '' }, 'Any'), lists.data.map((l) => h('option', { value: l.id }, l.name)));
      const counts = await Promise.all(segments.data.map((s) => api('GET', `/v1/segments/${s.id}/contacts?limit=1`).then((r) => r.count).catch(() => null)));
      fill(groups,
        h('section', { class: 'card' }, h('h2', {}, 'Lists'), table([
          { title: 'List', cell: (l) => l.name },
          { title: 'Members', cell: (l) => String(l.members), class: 'n' },
        ], lists.data, 'No lists yet: an import can make one.')),
        h('section', { class: 'card' }, h('h2', {}, 'Segments'), table([
          { title: 'Segment', cell: (s) => s.name },
          { title: 'Contacts now', cell: (s) => String(counts[segments.data.indexOf(s)] ?? '–'), class: 'n' },
        ], segments.data, 'No segments yet.')));
    } catch (e) {
      fill(groups, notice('error', explain(e)));
    }
  }

  const form = h('form', { class: 'filters', role: 'search', onsubmit: (ev) => { ev.preventDefault(); cursors = [null]; load(null); } },
    field('Search', q), field('Tag', tag), field('List', list), field('Consent', optedOut),
    h('button', { type: 'submit', class: 'primary' }, 'Search'));
  load(null);
  loadGroups();
  return h('section', {},
    h('div', { class: 'heading' }, h('h1', {}, 'Contacts'),
      atLeast('member') ? h('a', { class: 'button', href: '#/import' }, 'Import a CSV') : null,
      h('a', { href: '/v1/contacts/export', download: 'contacts.csv' }, 'Export all as CSV')),
    form, results, groups);
}

/** One contact: edit, consent history, export, erase. */
export function contact(id) {
  const body = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const status = h('div');
  async function load() {
    try {
      const [c, consent] = await Promise.all([api('GET', `/v1/contacts/${id}`), api('GET', `/v1/contacts/${id}/consent`)]);
      const name = h('input', { type: 'text', name: 'name', value: c.name || '' });
      const email = h('input', { type: 'email', name: 'email', value: c.email || '' });
      const zone = h('input', { type: 'text', name: 'time_zone', value: c.time_zone || '', placeholder: 'America/New_York' });
      const tags = h('input', { type: 'text', name: 'tags', value: c.tags.join(', ') });
      const fields = h('textarea', { name: 'fields', rows: 4 }, JSON.stringify(c.fields, null, 2));
      const edit = h('form', { class: 'card', onsubmit: async (ev) => {
        ev.preventDefault();
        let parsed;
        try {
          parsed = JSON.parse(fields.value || '{}');
        } catch (e) {
          return fill(status, notice('error', `Fields must be a JSON object: ${e.message}`));
        }
        // Fields merge: a field taken out of the box is removed (null).
        for (const k of Object.keys(c.fields)) if (!(k in parsed)) parsed[k] = null;
        try {
          await api('PATCH', `/v1/contacts/${id}`, {
            name: name.value.trim() || null, email: email.value.trim() || null,
            time_zone: zone.value.trim() || null, tags: tagsOf(tags.value), fields: parsed,
          });
          fill(status, notice('ok', 'Saved.'));
          load();
        } catch (e) {
          fill(status, notice('error', explain(e)));
        }
      } },
      h('h2', {}, 'Details'),
      field('Name', name), field('Email', email), field('Time zone', zone, `Now ${c.time_zone || 'unknown'} (${c.time_zone_source}).`),
      field('Tags', tags, 'Separated by commas.'), field('Custom fields (JSON)', fields),
      atLeast('member') ? h('button', { type: 'submit', class: 'primary' }, 'Save') : null);
      const gdpr = h('section', { class: 'card' }, h('h2', {}, 'Personal data'),
        h('p', {}, h('a', { href: `/v1/contacts/${id}/export`, download: `contact-${id}.json` }, 'Export everything held about this person (JSON)')),
        atLeast('member') ? h('button', { type: 'button', class: 'danger', onclick: async () => {
          if (!confirm(`Erase ${c.phone}? Their contact, consent history and message texts are deleted; the opt-out, if any, is kept as a hash.`)) return;
          try {
            const r = await api('POST', `/v1/contacts/${id}/erase`, {});
            fill(body, notice('ok', `Erased, with ${r.messages} message texts.`), h('p', {}, h('a', { href: '#/contacts' }, 'Back to contacts')));
          } catch (e) {
            fill(status, notice('error', explain(e)));
          }
        } }, 'Erase this contact (GDPR)') : null);
      fill(body,
        h('p', {}, h('strong', {}, c.phone), ' ', c.opted_out ? h('span', { class: 'badge s-failed' }, 'opted out') : h('span', { class: 'badge s-delivered' }, 'subscribed'),
          ' ', h('a', { href: `#/messages?to=${encodeURIComponent(c.phone)}` }, 'Messages to this number')),
        status,
        h('div', { class: 'columns' }, edit,
          h('div', {},
            h('section', { class: 'card' }, h('h2', {}, 'Consent history'), table([
              { title: 'When', cell: (e) => when(e.at) },
              { title: 'Change', cell: (e) => e.change },
              { title: 'Source', cell: (e) => e.source },
              { title: 'Scope', cell: (e) => e.scope },
              { title: 'Evidence', cell: (e) => evidence(e.evidence) },
            ], consent.data, 'No consent changes recorded.')),
            gdpr)));
    } catch (e) {
      fill(body, notice('error', explain(e)));
    }
  }
  load();
  return h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Contact'), h('a', { href: '#/contacts' }, 'All contacts')), body);
}

const TARGETS = ['phone', 'name', 'email', 'time_zone', 'tags', 'ignore'];

/** The header row of a CSV file (its first line), split on commas outside quotes. */
function headerOf(text) {
  const line = text.split(/\r?\n/)[0] || '';
  const cells = [];
  let cur = '';
  let quoted = false;
  for (const ch of line) {
    if (ch === '"') quoted = !quoted;
    else if (ch === ',' && !quoted) { cells.push(cur.trim()); cur = ''; } else cur += ch;
  }
  cells.push(cur.trim());
  return cells.filter((c) => c !== '');
}

/** What a column maps to by default: the contact field of its name, or a custom field. */
function guess(column) {
  const c = column.toLowerCase().replace(/[^a-z]/g, '');
  if (['phone', 'mobile', 'number', 'cell', 'msisdn', 'phonenumber'].includes(c)) return 'phone';
  if (['name', 'fullname'].includes(c)) return 'name';
  if (['email', 'emailaddress', 'mail'].includes(c)) return 'email';
  if (['timezone', 'tz'].includes(c)) return 'time_zone';
  if (c === 'tags') return 'tags';
  return `fields.${column.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/** The import: choose a file, map its columns, watch it run, read the rows refused. */
export function importPage() {
  const status = h('div');
  const file = h('input', { type: 'file', name: 'file', accept: '.csv,text/csv', required: true });
  const mapping = h('div');
  const listName = h('input', { type: 'text', name: 'list', placeholder: 'Customers' });
  const tags = h('input', { type: 'text', name: 'tags' });
  const consent = h('input', { type: 'text', name: 'consent_source', placeholder: 'paper form at the desk' });
  const progress = h('div');
  let selects = [];

  file.addEventListener('change', async () => {
    fill(mapping);
    fill(status);
    const f = file.files[0];
    if (!f) return;
    const columns = headerOf(await f.slice(0, 64 * 1024).text());
    if (!columns.length) return fill(status, notice('error', 'The file has no header row.'));
    selects = columns.map((col) => {
      const guessed = guess(col);
      const options = [...TARGETS, guessed.startsWith('fields.') ? guessed : null].filter(Boolean);
      return [col, h('select', { name: `map-${col}`, 'aria-label': `Column ${col}` }, options.map((t) => h('option', { value: t, selected: t === guessed }, t.startsWith('fields.') ? `custom field ${t.slice(7)}` : t)))];
    });
    fill(mapping, h('h2', {}, 'Columns'), table([
      { title: 'Column in the file', cell: ([col]) => col },
      { title: 'Becomes', cell: ([, sel]) => sel },
    ], selects));
  });

  async function watch(job) {
    for (;;) {
      let j;
      try {
        j = await api('GET', `/v1/jobs/${job}`);
      } catch (e) {
        return fill(progress, notice('error', explain(e)));
      }
      const f = file.files[0];
      const total = f ? f.size : 1;
      const done = j.state === 'completed' ? total : Math.min(j.bytes_read, total);
      fill(progress,
        h('label', { for: 'import-progress' }, `${j.state}: ${j.rows} rows read — ${j.created} created, ${j.updated} updated, ${j.skipped} refused`),
        h('progress', { id: 'import-progress', max: total, value: done }),
        j.errors.length ? h('section', { class: 'card', id: 'import-errors' }, h('h2', {}, 'Rows refused'), table([
          { title: 'Row', cell: (e) => String(e.row), class: 'n' },
          { title: 'Column', cell: (e) => e.column || '' },
          { title: 'Why', cell: (e) => `${e.message} (${e.code})` },
        ], j.errors)) : null);
      if (j.state !== 'running') return;
      await new Promise((r) => setTimeout(r, 500));
      if (!progress.isConnected) return;
    }
  }

  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    fill(status);
    const f = file.files[0];
    if (!f) return;
    const query = new URLSearchParams();
    const map = selects.map(([col, sel]) => `${col}:${sel.value.replace(/^fields\./, '')}`).join(',');
    if (map) query.set('map', map);
    if (listName.value.trim()) query.set('list', listName.value.trim());
    if (tags.value.trim()) query.set('tags', tags.value.trim());
    if (consent.value.trim()) query.set('consent_source', consent.value.trim());
    try {
      const job = await api('POST', `/v1/contacts/import?${query}`, f, { headers: { 'Content-Type': 'text/csv' } });
      watch(job.id);
    } catch (e) {
      fill(status, notice('error', explain(e)));
    }
  } },
  field('CSV file', file, 'A header row, then a contact a row; a phone column is needed.'),
  mapping,
  field('Add to the list', listName, 'Made if there is no list of that name.'),
  field('Tags for every contact', tags, 'Separated by commas.'),
  field('Consent source', consent, 'When these people opted in: where and how. Leave empty otherwise.'),
  status,
  h('button', { type: 'submit', class: 'primary' }, 'Import'));
  return h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Import contacts'), h('a', { href: '#/contacts' }, 'All contacts')), form, progress);
}

