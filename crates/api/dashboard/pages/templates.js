// Templates: bodies with merge fields, written with a live preview against a chosen contact (the text, its
// encoding, parts and cost, and the fields that contact lacks).

import { h, fill, api, when, num, notice, explain, field, table } from '../lib.js';
import { atLeast } from '../app.js';

export function templates() {
  const list = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const editor = h('div');
  const status = h('div');

  async function load() {
    try {
      const found = await api('GET', '/v1/templates');
      fill(list, table([
        { title: 'Name', cell: (t) => h('button', { type: 'button', class: 'link', onclick: () => edit(t) }, t.name) },
        { title: 'Category', cell: (t) => t.category },
        { title: 'Body', cell: (t) => h('span', { class: 'clip' }, t.body) },
        { title: 'Changed', cell: (t) => when(t.updated_at) },
      ], found.data, 'No templates yet.'));
    } catch (e) {
      fill(list, notice('error', explain(e)));
    }
  }

  function edit(t) {
    fill(status);
    const name = h('input', { type: 'text', name: 'name', required: true, value: t ? t.name : '' });
    const category = h('select', { name: 'category' },
      ['transactional', 'marketing'].map((c) => h('option', { value: c, selected: t && t.category === c }, c)));
    const body = h('textarea', { name: 'body', rows: 5, required: true }, t ? t.body : 'Hi {{ name | default("there") }}, ');
    const contact = h('input', { type: 'search', name: 'preview_contact', placeholder: 'a contact\'s number or name', list: 'preview-contacts' });
    const options = h('datalist', { id: 'preview-contacts' });
    const data = h('textarea', { name: 'data', rows: 2 }, '{}');
    const preview = h('div', { class: 'preview', 'aria-live': 'polite' });
    let saved = t;

    let asked = 0;
    async function showPreview() {
      const mine = ++asked;
      const payload = { body: body.value };
      try {
        payload.data = JSON.parse(data.value || '{}');
      } catch (e) {
        return fill(preview, notice('error', `Data must be JSON: ${e.message}`));
      }
      const who = contact.value.trim();
      if (who) {
        const found = await api('GET', `/v1/contacts?limit=1&q=${encodeURIComponent(who)}`).catch(() => ({ data: [] }));
        if (found.data[0]) payload.contact_id = found.data[0].id;
        else payload.contact = { phone: who };
      }
      try {
        const p = await api('POST', '/v1/templates/preview', payload);
        if (mine !== asked) return;
        fill(preview,
          h('p', { class: 'sms' }, p.text),
          h('p', { class: 'counter' }, `${p.encoding} · ${p.segments} part${p.segments === 1 ? '' : 's'}${p.cost === null || p.cost === undefined ? '' : ` · cost ${num(p.cost)}`}`),
          p.missing_fields.length ? notice('warn', `Missing for this contact: ${p.missing_fields.join(', ')}`) : null);
      } catch (e) {
        if (mine === asked) fill(preview, notice('warn', explain(e)));
      }
    }
    // The preview follows the typing: asked a moment after the last key.
    let timer = null;
    const soon = () => { clearTimeout(timer); timer = setTimeout(showPreview, 250); };
    body.addEventListener('input', soon);
    data.addEventListener('input', soon);
    contact.addEventListener('change', soon);

    contact.addEventListener('input', async () => {
      const q = contact.value.trim();
      if (q.length < 2) return;
      const found = await api('GET', `/v1/contacts?limit=8&q=${encodeURIComponent(q)}`).catch(() => ({ data: [] }));
      fill(options, found.data.map((c) => h('option', { value: c.phone }, c.name || c.phone)));
    });

    const form = h('form', { class: 'card', onsubmit: async (ev) => {
      ev.preventDefault();
      fill(status);
      const spec = { name: name.value, body: body.value, category: category.value };
      try {
        saved = saved ? await api('PATCH', `/v1/templates/${saved.id}`, spec) : await api('POST', '/v1/templates', spec);
        fill(status, notice('ok', `Saved ${saved.name}.`));
        load();
        showPreview();
      } catch (e) {
        fill(status, notice('error', explain(e)));
      }
    } },
    h('h2', {}, t ? `Edit ${t.name}` : 'New template'),
    field('Name', name), field('Category', category),
    field('Body', body, 'Merge fields: {{ name }}, {{ phone }}, {{ fields.plan }}, {{ data.order_id }}; filters such as default("there") and date("%a %H:%M"); {{ link("https://shop.example/offer") }} for a short link.'),
    atLeast('member') ? h('div', { class: 'actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Save'),
      t ? h('button', { type: 'button', class: 'danger', onclick: async () => {
        if (!confirm(`Delete the template ${t.name}?`)) return;
        try {
          await api('DELETE', `/v1/templates/${t.id}`);
          fill(editor);
          load();
        } catch (e) {
          fill(status, notice('error', explain(e)));
        }
      } }, 'Delete') : null) : null);
    const previewBox = h('section', { class: 'card' }, h('h2', {}, 'Preview'),
      field('For the contact', contact), options, field('With data (JSON)', data),
      h('button', { type: 'button', class: 'preview-button', onclick: showPreview }, 'Preview'), preview);
    fill(editor, h('div', { class: 'columns' }, form, previewBox));
    showPreview();
  }

  load();
  return h('section', {},
    h('div', { class: 'heading' }, h('h1', {}, 'Templates'),
      atLeast('member') ? h('button', { type: 'button', class: 'primary', onclick: () => edit(null) }, 'New template') : null),
    status, h('section', { class: 'card' }, list), editor);
}
