// Overview: what the account sent and how it went over a period, from the analytics API; refreshed every 10 s.

import { h, fill, api, num, pct, secs, notice, explain, lineChart, table, every } from '../lib.js';

const PERIODS = [
  { id: '24h', title: 'Last 24 hours', by: 'hour', hours: 24 },
  { id: '7d', title: 'Last 7 days', by: 'day', hours: 24 * 7 },
  { id: '30d', title: 'Last 30 days', by: 'day', hours: 24 * 30 },
];

const METRICS = 'sent,delivered,undelivered,failed,delivery_rate,latency_p50,latency_p95,cost,replies,clicks,opt_outs';

/** The sums of a series' points (rates and latencies are taken from the totals query). */
function total(points, key) {
  return points.reduce((a, p) => a + (p[key] || 0), 0);
}

function label(t, by) {
  const d = new Date(t);
  return by === 'hour'
    ? d.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleDateString('en-GB', { day: 'numeric', month: 'short' });
}

const PALETTE = ['#1f5f8b', '#2e7d32', '#8a5a00', '#6a3d9a', '#c62828'];

/** A line a group (the five that sent most), of what each sent by hour or day. */
function groupChart(title, data, labels) {
  const top = data
    .map((g) => ({ g, sent: total(g.points, 'sent') }))
    .filter((x) => x.sent > 0)
    .sort((a, b) => b.sent - a.sent)
    .slice(0, PALETTE.length);
  if (!top.length) return h('div', {}, h('h2', {}, title), h('p', { class: 'empty' }, 'Nothing sent in this period.'));
  return lineChart(title, labels, top.map(({ g }, i) => ({
    name: g.group || '(none)', color: PALETTE[i], values: g.points.map((p) => p.sent),
  })), { height: 180 });
}

export function overview() {
  let period = PERIODS[0];
  const body = h('div', { class: 'stack' }, h('p', { class: 'loading' }, 'Loading…'));
  const picker = h('select', { id: 'period', onchange: () => {
    period = PERIODS.find((p) => p.id === picker.value) || PERIODS[0];
    load();
  } }, PERIODS.map((p) => h('option', { value: p.id }, p.title)));
  const updated = h('small', { class: 'muted' });

  async function load() {
    const to = new Date();
    // The buckets are whole hours or days (UTC): the range ends at the next bucket so the current one shows.
    const end = new Date(to);
    if (period.by === 'hour') end.setUTCMinutes(60, 0, 0);
    else end.setUTCHours(24, 0, 0, 0);
    const from = new Date(end.getTime() - period.hours * 3600_000);
    const q = (extra) => `/v1/analytics?metric=${METRICS}&by=${period.by}&from=${from.toISOString()}&to=${end.toISOString()}${extra}`;
    try {
      const [series, totals, connectors, countries] = await Promise.all([
        api('GET', q('')),
        api('GET', `/v1/analytics?metric=${METRICS}&by=day&from=${from.toISOString()}&to=${end.toISOString()}`),
        api('GET', q('&group=connector')),
        api('GET', q('&group=country')),
      ]);
      const points = (series.data[0] || { points: [] }).points;
      const all = (totals.data[0] || { points: [] }).points;
      const sent = total(all, 'sent');
      const delivered = total(all, 'delivered');
      const rate = sent ? delivered / sent : null;
      // Latency percentiles of the whole range are not the sum of days': the latest day's are shown.
      const lastWithLatency = [...all].reverse().find((p) => p.latency_p50 !== null && p.latency_p50 !== undefined);
      const cards = [
        ['Sent', num(sent)],
        ['Delivered', num(delivered)],
        ['Undelivered', num(total(all, 'undelivered'))],
        ['Failed', num(total(all, 'failed'))],
        ['Delivery rate', pct(rate)],
        ['Latency p50 / p95', lastWithLatency ? `${secs(lastWithLatency.latency_p50)} / ${secs(lastWithLatency.latency_p95)}` : '–'],
        ['Cost', num(total(all, 'cost'))],
        ['Replies', num(total(all, 'replies'))],
        ['Clicks', num(total(all, 'clicks'))],
        ['Opt-outs', num(total(all, 'opt_outs'))],
      ];
      const labels = points.map((p) => label(p.t, period.by));
      const groupRows = (data) => data.map((g) => ({
        group: g.group || '(none)',
        sent: total(g.points, 'sent'),
        delivered: total(g.points, 'delivered'),
        failed: total(g.points, 'failed') + total(g.points, 'undelivered'),
      })).filter((r) => r.sent || r.delivered || r.failed).sort((a, b) => b.sent - a.sent);
      const groupTable = (title, data) => h('section', { class: 'card' }, h('h2', {}, title), table([
        { title: title.replace('By ', ''), cell: (r) => r.group },
        { title: 'Sent', cell: (r) => num(r.sent), class: 'n' },
        { title: 'Delivered', cell: (r) => num(r.delivered), class: 'n' },
        { title: 'Not delivered', cell: (r) => num(r.failed), class: 'n' },
        { title: 'Rate', cell: (r) => pct(r.sent ? r.delivered / r.sent : null), class: 'n' },
      ], groupRows(data), 'Nothing sent in this period.'));
      fill(body,
        h('ul', { class: 'cards', 'aria-label': 'Totals' }, cards.map(([k, v]) =>
          h('li', { class: 'card stat' }, h('span', { class: 'k' }, k), h('strong', { class: 'v', 'data-metric': k }, v)))),
        h('section', { class: 'card' }, lineChart(`Messages by ${period.by}`, labels, [
          { name: 'Sent', color: '#1f5f8b', values: points.map((p) => p.sent) },
          { name: 'Delivered', color: '#2e7d32', values: points.map((p) => p.delivered) },
          { name: 'Failed or undelivered', color: '#c62828', values: points.map((p) => (p.failed || 0) + (p.undelivered || 0)) },
        ])),
        h('div', { class: 'columns' },
          h('section', { class: 'card' }, groupChart('Sent by connector', connectors.data, labels)),
          h('section', { class: 'card' }, groupChart('Sent by country', countries.data, labels))),
        h('div', { class: 'columns' }, groupTable('By connector', connectors.data), groupTable('By country', countries.data)));
      fill(updated, `Updated ${new Date().toLocaleTimeString('en-GB')}`);
    } catch (e) {
      fill(body, notice('error', explain(e)));
    }
  }

  const page = h('section', {},
    h('div', { class: 'heading' }, h('h1', {}, 'Overview'),
      h('div', { class: 'field inline' }, h('label', { for: 'period' }, 'Period'), picker), updated),
    body);
  load();
  every(page, 10_000, load);
  return page;
}
