// Campaigns: the list; a new one (audience, template or body, sender, category, schedule, throughput); one
// campaign live — its progress, numbers and chart by hour, test send, start, pause, resume, cancel, report as CSV.

import { h, fill, api, num, pct, when, notice, explain, field, table, lineChart, every } from '../lib.js';
import { atLeast } from '../app.js';

function stateBadge(state) {
  const cls = { completed: 's-delivered', running: 's-sent', scheduled: 's-queued', paused: 's-queued', canceled: 's-canceled', draft: '' }[state] || '';
  return h('span', { class: `badge ${cls}` }, state);
}

export function campaigns() {
  const list = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  (async () => {
    try {
      const found = await api('GET', '/v1/campaigns?limit=200');
      fill(list, table([
        { title: 'Name', cell: (c) => h('a', { href: `#/campaigns/${c.id}` }, c.name) },
        { title: 'State', cell: (c) => stateBadge(c.state) },
        { title: 'Category', cell: (c) => c.category },
        { title: 'Next run', cell: (c) => (c.next_run_at ? when(c.next_run_at) : '–') },
        { title: 'Created', cell: (c) => when(c.created_at) },
      ], found.data.slice().reverse(), 'No campaigns yet.'));
    } catch (e) {
      fill(list, notice('error', explain(e)));
    }
  })();
  return h('section', {},
    h('div', { class: 'heading' }, h('h1', {}, 'Campaigns'), atLeast('member') ? h('a', { class: 'button', href: '#/campaigns/new' }, 'New campaign') : null),
    h('section', { class: 'card' }, list));
}

/** A new campaign, saved as a draft and opened. */
export function newCampaign() {
  const status = h('div');
  const name = h('input', { type: 'text', name: 'name', required: true });
  const lists = h('select', { name: 'lists', multiple: true, size: 4 });
  const segments = h('select', { name: 'segments', multiple: true, size: 3 });
  const exclude = h('select', { name: 'exclude', multiple: true, size: 3 });
  const template = h('select', { name: 'template_id' }, h('option', { value: '' }, 'None: write the text below'));
  const body = h('textarea', { name: 'body', rows: 4, placeholder: 'Hi {{ name | default("there") }}, …' });
  const from = h('input', { type: 'text', name: 'from', required: true, list: 'campaign-senders' });
  const senders = h('datalist', { id: 'campaign-senders' });
  const category = h('select', { name: 'category' }, h('option', { value: 'marketing' }, 'marketing (waits for allowed hours)'), h('option', { value: 'transactional' }, 'transactional'));
  const at = h('input', { type: 'datetime-local', name: 'at' });
  const throughput = h('input', { type: 'number', name: 'throughput', min: 1, placeholder: 'no limit' });
  const missing = h('select', { name: 'on_missing_field' },
    h('option', { value: 'default' }, 'send with the default'), h('option', { value: 'skip' }, 'skip the contact'), h('option', { value: 'fail' }, 'stop the campaign'));

  Promise.all([api('GET', '/v1/lists'), api('GET', '/v1/segments'), api('GET', '/v1/templates'), api('GET', '/v1/numbers'), api('GET', '/v1/sender-ids')])
    .then(([l, s, t, n, ids]) => {
      fill(lists, l.data.map((x) => h('option', { value: x.id }, `${x.name} (${x.members})`)));
      fill(segments, s.data.map((x) => h('option', { value: x.id }, x.name)));
      fill(exclude, l.data.map((x) => h('option', { value: x.id }, x.name)));
      template.append(...t.data.map((x) => h('option', { value: x.id }, x.name)));
      fill(senders, n.data.map((x) => h('option', { value: x.number })), ids.data.filter((x) => x.status === 'active').map((x) => h('option', { value: x.sender_id })));
    })
    .catch((e) => fill(status, notice('error', explain(e))));

  const picked = (sel) => [...sel.selectedOptions].map((o) => o.value);
  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    fill(status);
    const spec = {
      name: name.value,
      audience: { lists: picked(lists), segments: picked(segments), exclude: { lists: picked(exclude) } },
      from: from.value.trim(),
      category: category.value,
      on_missing_field: missing.value,
    };
    if (template.value) spec.template_id = template.value;
    else spec.body = body.value;
    if (at.value) spec.schedule = { at: new Date(at.value).toISOString() };
    if (throughput.value) spec.throughput = Number(throughput.value);
    try {
      const c = await api('POST', '/v1/campaigns', spec);
      location.hash = `#/campaigns/${c.id}`;
    } catch (e) {
      fill(status, notice('error', explain(e)));
    }
  } },
  field('Name', name),
  h('fieldset', {}, h('legend', {}, 'Audience'), field('Lists', lists, 'Ctrl or Cmd to pick several.'), field('Segments', segments), field('Leave out the lists', exclude)),
  field('Template', template), field('Text', body, 'When no template is chosen. Merge fields as in templates.'),
  field('From', from), senders, field('Category', category),
  field('Send at', at, 'Empty: when you start it. Quiet hours apply per recipient, in their own time zone.'),
  field('At most texts a second', throughput),
  field('A contact lacks a merge field', missing),
  status,
  h('button', { type: 'submit', class: 'primary' }, 'Save as draft'));
  return h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'New campaign'), h('a', { href: '#/campaigns' }, 'All campaigns')), form);
}

/** One campaign, live. */
export function campaign(id) {
  const body = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const status = h('div');
  const chart = h('div');
  const page = h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Campaign'), h('a', { href: '#/campaigns' }, 'All campaigns')), status, body, chart);

  const act = (verb) => async () => {
    try {
      await api('POST', `/v1/campaigns/${id}/${verb}`);
      fill(status, notice('ok', `${verb[0].toUpperCase()}${verb.slice(1)}: done.`));
      load();
    } catch (e) {
      fill(status, notice('error', explain(e)));
    }
  };

  const shown = { busy: true, at: 0 };
  async function load() {
    let c;
    shown.at = Date.now();
    try {
      c = await api('GET', `/v1/campaigns/${id}`);
    } catch (e) {
      return fill(body, notice('error', explain(e)));
    }
    const n = c.stats || {};
    // Sending, texts waiting, or texts sent in the last ten minutes without their receipts yet: the numbers move.
    const recent = Date.now() - new Date(c.updated_at).getTime() < 600_000;
    const unreceipted = (n.sent || 0) > (n.delivered || 0) + (n.undelivered || 0);
    shown.busy = c.state === 'running' || (n.waiting || 0) > 0 || (recent && unreceipted);
    const s = c.stats || {};
    const done = (s.texts || 0) + Object.values(s.skipped || {}).reduce((a, b) => a + b, 0);
    const audience = s.audience || 0;
    const skipped = Object.entries(s.skipped || {}).map(([k, v]) => `${k.replace(/_/g, ' ')} ${num(v)}`).join(', ') || 'none';
    const actions = atLeast('member') ? [
      ['draft', 'completed', 'canceled'].includes(c.state) ? h('button', { type: 'button', class: 'primary', onclick: act('start') }, c.state === 'draft' ? 'Start' : 'Run again') : null,
      c.state === 'running' ? h('button', { type: 'button', onclick: act('pause') }, 'Pause') : null,
      c.state === 'paused' ? h('button', { type: 'button', class: 'primary', onclick: act('resume') }, 'Resume') : null,
      ['draft', 'scheduled', 'running', 'paused'].includes(c.state) ? h('button', { type: 'button', class: 'danger', onclick: act('cancel') }, 'Cancel') : null,
    ] : [];
    const testTo = h('input', { type: 'tel', name: 'test_to', placeholder: '+15551234567' });
    const test = atLeast('member') ? h('form', { class: 'inline-form', onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const m = await api('POST', `/v1/campaigns/${id}/test`, { to: testTo.value.trim() });
        fill(status, notice('ok', 'Test sent. '), h('a', { href: `#/messages/${m.id}` }, 'Follow it'));
      } catch (e) {
        fill(status, notice('error', explain(e)));
      }
    } }, field('Test to', testTo), h('button', { type: 'submit' }, 'Send a test')) : null;
    const stats = [
      ['Audience', num(audience)], ['Skipped', skipped], ['Queued', num(s.queued)], ['Waiting', num(s.waiting)],
      ['Sent', num(s.sent)], ['Delivered', num(s.delivered)], ['Undelivered', num(s.undelivered)], ['Failed', num(s.failed)],
      ['Delivery rate', pct(s.sent ? s.delivered / s.sent : null)], ['Replies', num(s.replies)], ['Clicks', num(s.clicks)],
      ['Opt-outs', num(s.opt_outs)], ['Cost', num(s.cost)],
    ];
    let text = c.body;
    if (!text && c.template_id) {
      const t = await api('GET', `/v1/templates/${c.template_id}`).catch(() => null);
      text = t ? `${t.body}  (template ${t.name})` : 'Its template was deleted.';
    }
    fill(body,
      h('p', {}, h('strong', {}, c.name), ' ', stateBadge(c.state), c.next_run_at ? ` · next run ${when(c.next_run_at)}` : ''),
      c.error ? notice('error', `Stopped: ${c.error.message} (${c.error.code})`) : null,
      h('div', { class: 'actions' }, actions, h('a', { href: `/v1/campaigns/${id}/report.csv`, download: `campaign-${id}.csv` }, 'Report (CSV)')),
      h('label', { for: 'campaign-progress' }, `Progress: ${num(done)} of ${num(audience)} recipients`),
      h('progress', { id: 'campaign-progress', max: Math.max(audience, 1), value: Math.min(done, audience) }),
      h('ul', { class: 'cards', 'aria-label': 'Numbers' }, stats.map(([k, v]) => h('li', { class: 'card stat' }, h('span', { class: 'k' }, k), h('strong', { class: 'v', 'data-metric': k }, v)))),
      h('section', { class: 'card' }, h('h2', {}, 'Text'), h('p', { class: 'sms' }, text), h('p', { class: 'muted' }, `From ${c.from || (c.sender_pool || []).join(', ')} · ${c.category}`), test));
    try {
      const since = new Date(new Date(c.created_at).getTime() - 3600_000);
      since.setUTCMinutes(0, 0, 0);
      const to = new Date(Date.now() + 3600_000);
      const series = await api('GET', `/v1/analytics?metric=sent,delivered,failed,undelivered&by=hour&group=campaign&from=${since.toISOString()}&to=${to.toISOString()}`);
      const mine = series.data.find((g) => g.group === id) || { points: [] };
      const labels = mine.points.map((p) => new Date(p.t).toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' }));
      fill(chart, h('section', { class: 'card' }, lineChart('The campaign by hour', labels, [
        { name: 'Sent', color: '#1f5f8b', values: mine.points.map((p) => p.sent) },
        { name: 'Delivered', color: '#2e7d32', values: mine.points.map((p) => p.delivered) },
        { name: 'Failed or undelivered', color: '#c62828', values: mine.points.map((p) => (p.failed || 0) + (p.undelivered || 0)) },
      ])));
    } catch (e) {
      fill(chart, notice('error', explain(e)));
    }
  }
  // Asked again every 3 s while its numbers move, every 30 s otherwise: a campaign's numbers are counted at each
  // ask, which takes a while for a big one.
  load();
  every(page, 3_000, () => {
    if (shown.busy || Date.now() - shown.at >= 30_000) load();
  });
  return page;
}
