// Black-box interop with the npm `smpp` package (an SMPP implementation nobody here wrote), on both sides of
// smsgate at once:
//   - as the carrier: an npm `smpp` server is the SMSC smsgate's `smpp` connector binds to; it acks submits with
//     its own ids, sends a delivery receipt for each, and sends one message from a handset;
//   - as the client application: an npm `smpp` session binds to `smsgate serve --smpp` and submits a concatenated
//     message (UDH parts) asking for a receipt on its last part, which comes back as a deliver_sm.
// So one message goes npm client -> smsgate -> npm SMSC -> receipt -> smsgate -> npm client. A REST message goes
// through the same carrier to `delivered`, and the handset's message arrives as an inbound message over REST.
// Everything on loopback, bounded in time; the server is stopped and its folder removed at the end.
//
// Usage: node smpp_node.js PATH/TO/smsgate   (with the `smpp` package on NODE_PATH)

'use strict';
const smpp = require('smpp');
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');

const KEY = 'sk_interop_node_0123456789';
const DEADLINE_MS = 30000;

function check(cond, what) {
	if (!cond) {
		throw new Error('FAIL: ' + what);
	}
	console.log('ok: ' + what);
}

function until(what, cond) {
	const deadline = Date.now() + DEADLINE_MS;
	return new Promise((resolve, reject) => {
		const poll = async () => {
			try {
				const v = await cond();
				if (v) {
					return resolve(v);
				}
			} catch (e) {
				return reject(e);
			}
			if (Date.now() > deadline) {
				return reject(new Error('FAIL: timed out waiting for ' + what));
			}
			setTimeout(poll, 25);
		};
		poll();
	});
}

// The carrier: an npm smpp server taking any bind.
function startCarrier() {
	const carrier = { submitted: [], sessions: [] };
	let next = 0xa000;
	carrier.server = smpp.createServer((session) => {
		for (const bind of ['bind_transceiver', 'bind_transmitter', 'bind_receiver']) {
			session.on(bind, (pdu) => {
				session.send(pdu.response());
				if (bind !== 'bind_transmitter') {
					carrier.sessions.push(session);
				}
			});
		}
		session.on('enquire_link', (pdu) => session.send(pdu.response()));
		session.on('unbind', (pdu) => {
			session.send(pdu.response());
			session.close();
		});
		session.on('error', () => {});
		session.on('submit_sm', (pdu) => {
			const id = (next++).toString(16);
			carrier.submitted.push({ id, pdu });
			session.send(pdu.response({ message_id: id }));
			setTimeout(() => {
				const receiver = carrier.sessions.find((s) => !s.closed) || session;
				receiver.deliver_sm({
					source_addr: pdu.destination_addr,
					destination_addr: pdu.source_addr,
					esm_class: 0x04,
					short_message: 'id:' + id + ' sub:001 dlvrd:001 submit date:2601011200 done date:2601011200 '
						+ 'stat:DELIVRD err:000 text:',
					receipted_message_id: id,
					message_state: 2,
				});
			}, 30);
		});
	});
	return new Promise((resolve) => carrier.server.listen(0, '127.0.0.1', () => resolve(carrier)));
}

function startServer(binary, data) {
	const child = spawn(binary, ['serve', '--http', '127.0.0.1:0', '--smpp', '127.0.0.1:0', '--data-dir', data], {
		env: Object.assign({}, process.env, { SMSGATE_ADMIN_KEY: KEY }),
		stdio: ['ignore', 'pipe', 'ignore'],
	});
	const lines = readline.createInterface({ input: child.stdout });
	return new Promise((resolve, reject) => {
		const found = {};
		lines.on('line', (line) => {
			if (line.startsWith('smsgate: listening on ')) {
				found.http = line.split(' ')[3];
			}
			if (line.startsWith('smsgate: SMPP on ')) {
				found.smpp = line.split(' ')[3];
			}
			if (line.startsWith('smsgate: try')) {
				resolve(Object.assign(found, { child }));
			}
		});
		child.on('exit', (code) => reject(new Error('smsgate serve exited with ' + code)));
	});
}

async function call(base, method, p, body) {
	const r = await fetch(base + p, {
		method,
		headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' },
		body: body === undefined ? undefined : JSON.stringify(body),
	});
	const text = await r.text();
	return { status: r.status, body: text ? JSON.parse(text) : null };
}

async function run(server, carrier) {
	const base = server.http;
	const port = carrier.server.address().port;
	let r = await call(base, 'POST', '/v1/connectors', {
		name: 'npm-carrier', kind: 'smpp', host: '127.0.0.1', port, system_id: 'smsgate', password: 'pw',
	});
	check(r.status === 201, 'an smpp connector to the npm smpp SMSC: ' + JSON.stringify(r.body));
	r = await call(base, 'POST', '/v1/routes', { name: 'uk', match: { prefix: '+44' }, connectors: [{ name: 'npm-carrier' }] });
	check(r.status === 201, 'a route to it');
	await until('the connector to bind', async () => (await call(base, 'GET', '/v1/connectors/npm-carrier')).body.link.bound > 0);

	// REST -> smsgate -> npm SMSC -> receipt -> delivered.
	r = await call(base, 'POST', '/v1/messages', { to: '+447700900125', from: 'Acme', body: 'Hello via npm smpp' });
	check(r.status === 201, 'a message over REST');
	const restId = r.body.id;
	const m = await until('the REST message to be delivered', async () => {
		const got = (await call(base, 'GET', '/v1/messages/' + restId)).body;
		return got.status === 'delivered' && got;
	});
	check(m.connector === 'npm-carrier' && carrier.submitted.some((s) => s.id === m.carrier_id),
		'delivered through the npm SMSC, matched by its id ' + m.carrier_id);

	// A handset's message from the carrier arrives as an inbound message.
	carrier.sessions[0].deliver_sm({ source_addr: '447700900125', destination_addr: 'Acme', short_message: 'Yes please' });
	const inbound = await until('the inbound message', async () => {
		const list = (await call(base, 'GET', '/v1/inbound')).body.data;
		return list.length > 0 && list[0];
	});
	check(inbound.body === 'Yes please' && inbound.from === '+447700900125', 'the handset message over REST');

	// An npm smpp client application binds to smsgate's SMPP server.
	r = await call(base, 'POST', '/v1/smpp/credentials', { system_id: 'nodeapp', password: 'pw1234' });
	check(r.status === 201, 'SMPP credentials made over REST');
	const [host, smppPort] = server.smpp.split(':');
	const client = smpp.connect({ host, port: Number(smppPort) });
	client.on('error', (e) => console.log('client error: ' + e));
	const receipts = [];
	client.on('deliver_sm', (pdu) => {
		receipts.push(pdu);
		client.send(pdu.response());
	});
	const bound = await new Promise((resolve) => {
		client.bind_transceiver({ system_id: 'nodeapp', password: 'pw1234' }, (pdu) => resolve(pdu.command_status));
	});
	check(bound === 0, 'npm smpp bound as a transceiver (interface_version 0x50)');
	const parts = ['A concatenated message from the npm smpp client, ', 'in two parts with a UDH.'];
	const answers = await Promise.all(parts.map((text, i) => new Promise((resolve) => {
		client.submit_sm({
			source_addr_ton: 5,
			source_addr: 'Acme',
			dest_addr_ton: 1,
			dest_addr_npi: 1,
			destination_addr: '447700900126',
			registered_delivery: i === parts.length - 1 ? 1 : 0,
			short_message: { udh: Buffer.from([5, 0, 3, 0x42, parts.length, i + 1]), message: text },
		}, (pdu) => resolve(pdu));
	})));
	check(answers.every((a) => a.command_status === 0), 'both parts answered OK');
	const id = answers[0].message_id;
	check(answers.every((a) => a.message_id === id), 'the parts share one id: ' + id);
	const stored = (await call(base, 'GET', '/v1/messages/' + id)).body;
	check(stored.body === parts.join(''), 'stored whole: ' + JSON.stringify(stored.body));
	const receipt = await until('the receipt at the npm client', async () => receipts.find((p) => p.esm_class & 0x04));
	check(receipt.receipted_message_id === id && receipt.message_state === 2, 'the receipt for ' + id + ' came back');
	const text = typeof receipt.short_message === 'string' ? receipt.short_message : receipt.short_message.message;
	check(text.startsWith('id:' + id + ' sub:001 dlvrd:001') && text.includes('stat:DELIVRD'), 'receipt text: ' + text);
	check(carrier.submitted.some((s) => s.pdu.destination_addr === '447700900126'), 'it went through the npm SMSC');
	await new Promise((resolve) => client.unbind(() => resolve()));
	client.close();
}

async function main() {
	const binary = process.argv[2];
	const data = fs.mkdtempSync(path.join(os.tmpdir(), 'smsgate-node-'));
	const carrier = await startCarrier();
	const server = await startServer(binary, data);
	const watchdog = setTimeout(() => {
		console.log('FAIL: the whole run took too long');
		server.child.kill('SIGKILL');
		process.exit(1);
	}, 3 * DEADLINE_MS);
	let failed = null;
	try {
		await run(server, carrier);
	} catch (e) {
		failed = e;
	}
	server.child.kill('SIGTERM');
	await new Promise((resolve) => server.child.on('exit', resolve));
	for (const s of carrier.sessions) {
		s.close();
	}
	carrier.server.close();
	fs.rmSync(data, { recursive: true, force: true });
	clearTimeout(watchdog);
	if (failed) {
		console.log(failed.message);
		process.exit(1);
	}
}

main();
