// Developers (owners and admins): API keys — made, shown once, revoked; webhooks — URLs, signing secret, the
// recent deliveries and their attempts; SMPP credentials for client applications.

import { h, fill, api, when, notice, explain, field, table, session, every } from '../lib.js';

const SCOPES = ['send', 'read', 'manage'];

function keys(status) {
  const box = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const shown = h('div');
  const account = session.current.account.id;
  async function load() {
    try {
      const found = await api('GET', `/v1/accounts/${account}/keys`);
      fill(box, table([
        { title: 'Name', cell: (k) => k.name || '–' },
        { title: 'Key', cell: (k) => (k.prefix ? h('code', {}, `${k.prefix}…`) : '–') },
        { title: 'Scopes', cell: (k) => k.scopes.join(', ') },
        { title: 'Last used', cell: (k) => when(k.last_used_at) },
        { title: '', cell: (k) => (k.revoked_at ? `revoked ${when(k.revoked_at)}` : h('button', { type: 'button', class: 'danger small', onclick: async () => {
          if (!confirm(`Revoke ${k.name || k.prefix}? Systems using it stop working within ten seconds.`)) return;
          try {
            await api('DELETE', `/v1/accounts/${account}/keys/${k.id}`);
            fill(status, notice('ok', 'Revoked.'));
            load();
          } catch (e) {
            fill(status, notice('error', explain(e)));
          }
        } }, 'Revoke')) },
      ], found.data, 'No keys.'));
    } catch (e) {
      fill(box, notice('error', explain(e)));
    }
  }
  const name = h('input', { type: 'text', name: 'key_name', placeholder: 'the shop\'s checkout', required: true });
  const boxes = SCOPES.map((s) => h('input', { type: 'checkbox', name: `scope-${s}`, value: s, checked: s !== 'manage' }));
  const form = h('form', { class: 'inline-form keys-form', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const k = await api('POST', `/v1/accounts/${account}/keys`, { name: name.value, scopes: boxes.filter((b) => b.checked).map((b) => b.value) });
      fill(shown, notice('ok', 'Copy the key now: it is not shown again.'), h('p', {}, h('code', { class: 'secret', 'data-key': 'new' }, k.key)));
      name.value = '';
      load();
    } catch (e) {
      fill(status, notice('error', explain(e)));
    }
  } }, field('Name', name),
  h('fieldset', {}, h('legend', {}, 'Scopes'), SCOPES.map((s, i) => h('label', { class: 'check' }, boxes[i], ` ${s}`))),
  h('button', { type: 'submit', class: 'primary' }, 'Make a key'));
  load();
  return h('section', { class: 'card' }, h('h2', {}, 'API keys'), form, shown, box);
}

function webhooks(status) {
  const settings = h('div');
  const deliveries = h('div', { id: 'deliveries' });
  async function load() {
    try {
      const w = await api('GET', '/v1/webhooks');
      const statusUrl = h('input', { type: 'url', name: 'status_url', value: w.status_url || '', placeholder: 'https://shop.example/sms/status' });
      const inboundUrl = h('input', { type: 'url', name: 'inbound_url', value: w.inbound_url || '', placeholder: 'https://shop.example/sms/inbound' });
      fill(settings, h('form', { class: 'webhooks-form', onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await api('PUT', '/v1/webhooks', { status_url: statusUrl.value.trim() || null, inbound_url: inboundUrl.value.trim() || null });
          fill(status, notice('ok', 'Webhooks saved.'));
          load();
        } catch (e) {
          fill(status, notice('error', explain(e)));
        }
      } },
      field('Status changes go to', statusUrl), field('Inbound messages go to', inboundUrl),
      h('p', {}, 'Signing secret: ', h('code', { class: 'secret' }, w.secret || '–'),
        w.previous_secret_valid_until ? ` (the previous one signs too until ${when(w.previous_secret_valid_until)})` : ''),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary' }, 'Save'),
        h('button', { type: 'button', onclick: async () => {
          if (!confirm('Make a new signing secret? The old one signs beside it for a day.')) return;
          try {
            await api('POST', '/v1/webhooks/rotate-secret');
            fill(status, notice('ok', 'A new secret signs from now; the old one for a day more.'));
            load();
          } catch (e) {
            fill(status, notice('error', explain(e)));
          }
        } }, 'Rotate the secret'))));
    } catch (e) {
      fill(settings, notice('error', explain(e)));
    }
  }
  async function loadDeliveries() {
    try {
      const found = await api('GET', '/v1/webhooks/deliveries?limit=50');
      fill(deliveries, table([
        { title: 'When', cell: (c) => when(c.at) },
        { title: 'What', cell: (c) => `${c.kind} ${c.status}` },
        { title: 'Message', cell: (c) => h('a', { href: `#/messages/${c.message_id}` }, c.message_id.slice(-8)) },
        { title: 'State', cell: (c) => h('span', { class: `badge ${c.state === 'delivered' ? 's-delivered' : c.state === 'failed' ? 's-failed' : 's-queued'}` }, c.state) },
        { title: 'Attempts', cell: (c) => c.attempts.map((a) => `${a.result} (${a.ms} ms)`).join(', ') || '–' },
        { title: 'Next try', cell: (c) => (c.next_attempt_at ? when(c.next_attempt_at) : '–') },
      ], found.data, 'No webhooks sent yet.'));
    } catch (e) {
      fill(deliveries, notice('error', explain(e)));
    }
  }
  load();
  loadDeliveries();
  const card = h('section', { class: 'card' }, h('h2', {}, 'Webhooks'), settings, h('h3', {}, 'Recent deliveries'), deliveries);
  every(card, 5_000, loadDeliveries);
  return card;
}

function smpp(status) {
  const box = h('div', { id: 'smpp-credentials' });
  async function load() {
    try {
      const found = await api('GET', '/v1/smpp/credentials');
      fill(box, table([
        { title: 'system_id', cell: (c) => h('code', {}, c.system_id) },
        { title: 'Allowed from', cell: (c) => (c.allowed_ips && c.allowed_ips.length ? c.allowed_ips.join(', ') : 'anywhere') },
        { title: 'Binds at most', cell: (c) => (c.max_binds ? String(c.max_binds) : '–') },
        { title: 'A second', cell: (c) => (c.throughput ? String(c.throughput) : '–') },
        { title: '', cell: (c) => h('button', { type: 'button', class: 'danger small', onclick: async () => {
          if (!confirm(`Delete ${c.system_id}? Its binds are refused from now.`)) return;
          try {
            await api('DELETE', `/v1/smpp/credentials/${encodeURIComponent(c.system_id)}`);
            load();
          } catch (e) {
            fill(status, notice('error', explain(e)));
          }
        } }, 'Delete') },
      ], found.data, 'No SMPP credentials.'));
    } catch (e) {
      fill(box, notice('error', explain(e)));
    }
  }
  const systemId = h('input', { type: 'text', name: 'system_id', maxlength: 15, required: true, autocomplete: 'off' });
  const password = h('input', { type: 'password', name: 'smpp_password', minlength: 6, maxlength: 8, required: true, autocomplete: 'new-password' });
  const ips = h('input', { type: 'text', name: 'allowed_ips', placeholder: '203.0.113.0/24' });
  const form = h('form', { class: 'inline-form smpp-form', onsubmit: async (ev) => {
    ev.preventDefault();
    const body = { system_id: systemId.value.trim(), password: password.value };
    const ranges = ips.value.split(',').map((x) => x.trim()).filter(Boolean);
    if (ranges.length) body.allowed_ips = ranges;
    try {
      await api('POST', '/v1/smpp/credentials', body);
      fill(status, notice('ok', `${body.system_id} may bind now.`));
      systemId.value = '';
      password.value = '';
      load();
    } catch (e) {
      fill(status, notice('error', explain(e)));
    }
  } }, field('system_id', systemId), field('Password (6 to 8)', password), field('Allowed from', ips), h('button', { type: 'submit', class: 'primary' }, 'Add'));
  load();
  return h('section', { class: 'card' }, h('h2', {}, 'SMPP credentials'), form, box);
}

export function developers() {
  const status = h('div');
  return h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Developers'), h('a', { href: '/openapi.json' }, 'OpenAPI document')),
    status, keys(status), webhooks(status), smpp(status));
}
