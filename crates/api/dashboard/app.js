// The dashboard: a page a route (#/overview, #/messages, ...), the session, and the frame around the pages.
// Every action is a call to the REST API with the session cookie, so a user can do here only what their role
// may do over the API.

import { h, fill, api, session, notice, explain, field } from './lib.js';
import { overview } from './pages/overview.js';
import { messages, message } from './pages/messages.js';
import { send } from './pages/send.js';
import { users } from './pages/users.js';
import { contacts, contact, importPage } from './pages/contacts.js';
import { templates } from './pages/templates.js';
import { campaigns, newCampaign, campaign } from './pages/campaigns.js';
import { inbox } from './pages/inbox.js';
import { compliance } from './pages/compliance.js';
import { operator } from './pages/operator.js';
import { developers } from './pages/developers.js';
import { automations } from './pages/automations.js';

/** The pages in the menu: route, title, the page, and who sees it (a role at least; the operator's). */
const PAGES = [
  { route: 'overview', title: 'Overview', page: overview },
  { route: 'messages', title: 'Messages', page: messages },
  { route: 'send', title: 'Send', page: send, role: 'member' },
  { route: 'inbox', title: 'Inbox', page: inbox },
  { route: 'contacts', title: 'Contacts', page: contacts },
  { route: 'templates', title: 'Templates', page: templates },
  { route: 'campaigns', title: 'Campaigns', page: campaigns },
  { route: 'automations', title: 'Automations', page: automations },
  { route: 'compliance', title: 'Compliance', page: compliance },
  { route: 'users', title: 'Users', page: users, role: 'admin' },
  { route: 'developers', title: 'Developers', page: developers, role: 'admin' },
  { route: 'operator', title: 'Operator', page: operator, role: 'admin', operator: true },
];

/** Pages under another's route, by their first part: not in the menu. */
const SUBPAGES = {
  messages: (id) => message(id),
  contacts: (id) => contact(id),
  campaigns: (id) => (id === 'new' ? newCampaign() : campaign(id)),
  inbox: () => inbox(),
};

const RANK = { viewer: 0, member: 1, admin: 2, owner: 3 };

/** Whether the signed-in user's role is at least `role`. */
export function atLeast(role) {
  return !role || (session.current && RANK[session.current.user.role] >= RANK[role]);
}

/** Whether the signed-in user may see a page. */
function allowed(p) {
  return atLeast(p.role) && (!p.operator || (session.current && session.current.account.is_admin));
}

const root = document.getElementById('app');

async function signOut() {
  try {
    await api('DELETE', '/v1/session');
  } catch (e) {
    // Signed out already, or the server is gone: either way the page forgets the session.
  }
  session.current = null;
  location.hash = '#/sign-in';
}

function frame(current, content) {
  const s = session.current;
  const nav = h('nav', { 'aria-label': 'Main' },
    h('ul', {}, PAGES.filter(allowed).map((p) =>
      h('li', {}, h('a', { href: `#/${p.route}`, 'aria-current': p.route === current ? 'page' : null }, p.title)))));
  return h('div', { class: 'frame' },
    h('header', { class: 'top' },
      h('a', { class: 'brand', href: '#/overview' }, h('img', { src: '/assets/icon.svg', alt: '', width: 24, height: 24 }), 'smsgate'),
      nav,
      h('div', { class: 'who' },
        h('span', { class: 'account', title: s.account.id }, s.account.name),
        h('a', { class: 'email', href: '#/account', title: 'Your account' }, `${s.user.email} · ${s.user.role}`),
        h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'))),
    h('main', { id: 'main', class: 'page' }, content));
}

function signInPage() {
  const status = h('div');
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { class: 'card narrow', onsubmit: async (ev) => {
    ev.preventDefault();
    fill(status);
    try {
      session.current = await api('POST', '/v1/session', { email: email.value, password: password.value });
      location.hash = '#/overview';
    } catch (e) {
      fill(status, notice('error', explain(e)));
      password.value = '';
      password.focus();
    }
  } },
  h('h1', {}, 'Sign in to smsgate'),
  field('Email', email),
  field('Password', password),
  status,
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
  h('p', { class: 'aside' }, 'First time here? ', h('a', { href: '#/setup' }, 'Create the first user with the admin key'), '.'));
  return h('main', { id: 'main', class: 'page center' }, form);
}

/** The first user, made with the admin key (SMSGATE_ADMIN_KEY): the operator's, or an account's owner. */
function setupPage() {
  const status = h('div');
  const key = h('input', { type: 'password', name: 'admin_key', autocomplete: 'off', required: true });
  const account = h('input', { type: 'text', name: 'account_id', placeholder: 'the admin account', autocomplete: 'off' });
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password', minlength: 10, required: true });
  const form = h('form', { class: 'card narrow', onsubmit: async (ev) => {
    ev.preventDefault();
    fill(status);
    const body = { email: email.value, password: password.value, role: 'owner' };
    if (account.value.trim()) body.account_id = account.value.trim();
    try {
      await api('POST', '/v1/users', body, { headers: { Authorization: `Bearer ${key.value}` } });
      session.current = await api('POST', '/v1/session', { email: email.value, password: password.value });
      location.hash = '#/overview';
    } catch (e) {
      fill(status, notice('error', explain(e)));
    }
  } },
  h('h1', {}, 'Create a user'),
  h('p', {}, 'With the server\'s admin key (SMSGATE_ADMIN_KEY), create an owner: of the admin account (the operator) by default, or of the account you name.'),
  field('Admin key', key),
  field('Account id', account, 'Leave empty for the admin account.'),
  field('Email', email),
  field('Password', password, 'At least 10 characters.'),
  status,
  h('button', { type: 'submit', class: 'primary' }, 'Create and sign in'),
  h('p', { class: 'aside' }, h('a', { href: '#/sign-in' }, 'Back to sign-in')));
  return h('main', { id: 'main', class: 'page center' }, form);
}

/** The signed-in user's own page: who they are, and their password. */
function accountPage() {
  const s = session.current;
  const status = h('div');
  const current = h('input', { type: 'password', name: 'current_password', autocomplete: 'current-password', required: true });
  const next = h('input', { type: 'password', name: 'new_password', autocomplete: 'new-password', minlength: 10, required: true });
  const form = h('form', { class: 'card narrow', onsubmit: async (ev) => {
    ev.preventDefault();
    fill(status);
    try {
      await api('POST', '/v1/session/password', { current_password: current.value, new_password: next.value });
      fill(status, notice('ok', 'Your password is changed; your other sessions have ended.'));
      current.value = '';
      next.value = '';
    } catch (e) {
      fill(status, notice('error', explain(e)));
    }
  } }, h('h2', {}, 'Change your password'), field('Current password', current), field('New password', next, 'At least 10 characters.'), status,
  h('button', { type: 'submit', class: 'primary' }, 'Change'));
  return h('section', {}, h('div', { class: 'heading' }, h('h1', {}, 'Your account')),
    h('dl', { class: 'facts' }, h('dt', {}, 'Email'), h('dd', {}, s.user.email), h('dt', {}, 'Role'), h('dd', {}, s.user.role),
      h('dt', {}, 'Account'), h('dd', {}, `${s.account.name} (${s.account.id})`), h('dt', {}, 'Session ends'), h('dd', {}, new Date(s.expires_at).toLocaleString('en-GB'))),
    form);
}

async function route() {
  const [path, ...rest] = (location.hash.replace(/^#\/?/, '') || 'overview').split('/');
  if (path === 'setup') return fill(root, setupPage());
  if (!session.current) {
    try {
      const found = await api('GET', '/v1/session');
      session.current = found.signed_in ? found : null;
    } catch (e) {
      return fill(root, h('main', { class: 'page' }, notice('error', explain(e))));
    }
  }
  if (!session.current || path === 'sign-in') {
    if (session.current) return (location.hash = '#/overview');
    return fill(root, signInPage());
  }
  let content;
  const sub = rest[0] && rest[0].split('?')[0];
  const page = PAGES.find((p) => p.route === path.split('?')[0] && allowed(p));
  if (page && sub && SUBPAGES[page.route]) {
    content = SUBPAGES[page.route](sub);
  } else if (path === 'import' && atLeast('member')) {
    content = importPage();
  } else if (path === 'account') {
    content = accountPage();
  } else {
    content = page ? page.page() : h('section', {}, h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/overview' }, 'Go to the overview.')));
  }
  fill(root, frame(path.split('?')[0], content));
  const heading = root.querySelector('main h1');
  if (heading) document.title = `${heading.textContent} · smsgate`;
}

window.addEventListener('hashchange', route);
route();
