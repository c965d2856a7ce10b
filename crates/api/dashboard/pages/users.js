// Users: who signs in to this account, with which role; add, change a role, remove. For owners and admins.

import { h, fill, api, when, notice, explain, field, table, session } from '../lib.js';

const ROLES = ['owner', 'admin', 'member', 'viewer'];

export function users() {
  const list = h('div', {}, h('p', { class: 'loading' }, 'Loading…'));
  const status = h('div');
  const mayManage = (role) => session.current.user.role === 'owner' || role !== 'owner';

  async function load() {
    try {
      const found = await api('GET', '/v1/users');
      fill(list, table([
        { title: 'Email', cell: (u) => u.email },
        { title: 'Role', cell: (u) => {
          if (u.id === session.current.user.id || !mayManage(u.role)) return u.role;
          const pick = h('select', { 'aria-label': `Role of ${u.email}`, onchange: async () => {
            try {
              await api('PATCH', `/v1/users/${u.id}`, { role: pick.value });
              fill(status, notice('ok', `${u.email} is now ${pick.value}.`));
            } catch (e) {
              fill(status, notice('error', explain(e)));
            }
            load();
          } }, ROLES.filter(mayManage).map((r) => h('option', { value: r, selected: r === u.role }, r)));
          return pick;
        } },
        { title: 'Last sign-in', cell: (u) => when(u.last_sign_in_at) },
        { title: '', cell: (u) => (u.id === session.current.user.id || !mayManage(u.role) ? '' : h('button', { type: 'button', class: 'danger small', onclick: async () => {
          if (!confirm(`Remove ${u.email}?`)) return;
          try {
            await api('DELETE', `/v1/users/${u.id}`);
            fill(status, notice('ok', `${u.email} was removed.`));
          } catch (e) {
            fill(status, notice('error', explain(e)));
          }
          load();
        } }, 'Remove')) },
      ], found.data));
    } catch (e) {
      fill(list, notice('error', explain(e)));
    }
  }

  const email = h('input', { type: 'email', name: 'email', required: true, autocomplete: 'off' });
  const role = h('select', { name: 'role' }, ROLES.filter(mayManage).map((r) => h('option', { value: r, selected: r === 'member' }, r)));
  const password = h('input', { type: 'password', name: 'password', required: true, minlength: 10, autocomplete: 'new-password' });
  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      const u = await api('POST', '/v1/users', { email: email.value, role: role.value, password: password.value });
      fill(status, notice('ok', `${u.email} was added as ${u.role}.`));
      email.value = '';
      password.value = '';
      load();
    } catch (e) {
      fill(status, notice('error', explain(e)));
    }
  } },
  h('h2', {}, 'Add a user'),
  field('Email', email), field('Role', role), field('Password', password, 'At least 10 characters; they can change it after signing in.'),
  h('button', { type: 'submit', class: 'primary' }, 'Add'));

  load();
  return h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Users')), status, h('section', { class: 'card' }, list), form);
}
