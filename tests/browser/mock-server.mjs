// A tiny stand-in for `kiln serve`, for layout work on the web UI only
// (node mock-server.mjs [PORT]). It speaks the same paths, cookies and
// headers as the real server, with fake builds whose logs tick along. The
// committed test (ui.test.mjs) drives the real binary, never this.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

const UI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/http/ui');
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";
const TOKEN = 'kiln_mocktoken';
const sessions = new Map(); // sid -> {owner, csrf}
const builds = [];
const logs = new Map();
const port = Number(/^\d+$/.test(process.argv[2] || '') ? process.argv[2] : 8099);

function send(res, status, body, type, extra) {
	const headers = {
		'Content-Security-Policy': CSP,
		'X-Content-Type-Options': 'nosniff',
		'Referrer-Policy': 'no-referrer',
		'Cache-Control': 'no-store',
		'Content-Type': type || 'application/json; charset=utf-8',
		...extra,
	};
	res.writeHead(status, headers);
	res.end(typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
}
const err = (res, status, code, message) => send(res, status, { error: { code, message } });

function cookies(req) {
	const out = {};
	for (const p of (req.headers.cookie || '').split(';')) {
		const i = p.indexOf('=');
		if (i > 0) out[p.slice(0, i).trim()] = p.slice(i + 1).trim();
	}
	return out;
}

function newBuild(recipe, owner) {
	const id = crypto.randomUUID();
	const steps = recipe.steps || [];
	const b = {
		id, name: recipe.name ?? null, status: 'pending', config_hash: crypto.createHash('sha256').update(JSON.stringify(recipe)).digest('hex'),
		build_key: crypto.randomBytes(32).toString('hex'), source_date_epoch: 1700000000,
		created_at: new Date().toISOString(), started_at: null, completed_at: null, error: null,
		progress: { current_step: 0, total_steps: steps.length + 3, current: null }, cached: false, warning: false,
		artifacts: [], links: { self: `/api/v1/builds/${id}`, logs: `/api/v1/builds/${id}/logs`, cancel: `/api/v1/builds/${id}/cancel` },
		owner,
	};
	builds.unshift(b);
	logs.set(id, []);
	let i = 0;
	const lines = ['==> [1/n] setup', ...steps.map((s) => `==> step: ${s}`), ...steps.filter((s) => s.startsWith('RUN echo')).map((s) => s.slice(9).replace(/^'|'$/g, '')), '==> packing', '==> done'];
	const t = setInterval(() => {
		if (b.status === 'cancelled') { clearInterval(t); return; }
		b.status = 'building';
		b.started_at ??= new Date().toISOString();
		logs.get(id).push(lines[i]);
		b.progress.current_step = Math.min(i + 1, b.progress.total_steps);
		b.progress.current = lines[i];
		if (++i >= lines.length || steps.some((s) => s.includes('sleep 300')) && i > 2) {
			if (steps.some((s) => s.includes('sleep 300'))) return;
			clearInterval(t);
			b.status = 'completed';
			b.completed_at = new Date().toISOString();
			const data = Buffer.from('fake tarball\n');
			b.artifacts = [{ name: 'rootfs.tar.gz', sha256: crypto.createHash('sha256').update(data).digest('hex'), size: data.length, url: `/api/v1/builds/${id}/artifacts/rootfs.tar.gz` }];
			b._data = data;
		}
	}, 400);
	return b;
}

// --upstream URL --token T: sessions and CSRF here, /api/v1/builds* passed
// on to a real `kiln serve` with the bearer token (real builds, real SSE).
const argv = process.argv.slice(2);
const opt = (k) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : null; };
const UPSTREAM = opt('--upstream'), UPTOKEN = opt('--token');
function proxy(req, res, body) {
	const u = new URL(req.url, UPSTREAM);
	const headers = { Authorization: `Bearer ${UPTOKEN}`, Accept: req.headers.accept || '*/*' };
	if (req.headers['content-type']) headers['Content-Type'] = req.headers['content-type'];
	if (req.headers['last-event-id']) headers['Last-Event-ID'] = req.headers['last-event-id'];
	const up = http.request(u, { method: req.method, headers }, (ur) => {
		const h = { ...ur.headers, 'content-security-policy': CSP };
		res.writeHead(ur.statusCode, h);
		ur.pipe(res);
	});
	req.on('close', () => up.destroy());
	up.end(body);
}

const pub = (b) => { const { owner, _data, ...rest } = b; return rest; };

http.createServer(async (req, res) => {
	const url = new URL(req.url, 'http://x');
	const p = url.pathname;
	if (req.method === 'GET' && (p === '/' || p === '/index.html')) return send(res, 200, fs.readFileSync(`${UI}/index.html`), 'text/html; charset=utf-8');
	if (req.method === 'GET' && p.startsWith('/ui/')) {
		const f = path.join(UI, path.normalize(p.slice(4)));
		if (!f.startsWith(UI) || !fs.existsSync(f)) return err(res, 404, 'not_found', 'no such file');
		const type = f.endsWith('.js') ? 'text/javascript; charset=utf-8' : f.endsWith('.css') ? 'text/css; charset=utf-8' : 'application/json; charset=utf-8';
		return send(res, 200, fs.readFileSync(f), type);
	}
	const chunks = [];
	for await (const c of req) chunks.push(c);
	const body = Buffer.concat(chunks);
	const sid = cookies(req)['__Host-kiln_session'];
	const sess = sid && sessions.get(sid);
	if (p === '/api/v1/session') {
		if (req.method === 'POST') {
			let t; try { t = JSON.parse(body).token; } catch { t = null; }
			if (t !== TOKEN) return err(res, 401, 'unauthorized', 'invalid token');
			const id = crypto.randomBytes(16).toString('hex'), csrf = crypto.randomBytes(16).toString('hex');
			sessions.set(id, { owner: 'mock', csrf });
			return send(res, 200, { owner: 'mock', csrf_token: csrf, expires_at: new Date(Date.now() + 864e5).toISOString() }, null,
				{ 'Set-Cookie': [`__Host-kiln_session=${id}; Path=/; Max-Age=86400; Secure; HttpOnly; SameSite=Strict`, `__Host-kiln_csrf=${csrf}; Path=/; Max-Age=86400; Secure; SameSite=Strict`] });
		}
		if (!sess) return err(res, 401, 'unauthorized', 'no session');
		if (req.method === 'DELETE' && req.headers['x-csrf-token'] !== sess.csrf) return err(res, 403, 'csrf', 'missing or wrong CSRF token');
		if (req.method === 'DELETE') { sessions.delete(sid); return send(res, 204, ''); }
		return send(res, 200, { owner: sess.owner, csrf_token: sess.csrf, expires_at: null });
	}
	if (!sess) return err(res, 401, 'unauthorized', 'no session');
	if (req.method === 'POST' && (req.headers['x-csrf-token'] !== sess.csrf || (req.headers['sec-fetch-site'] && req.headers['sec-fetch-site'] !== 'same-origin') || (req.headers.origin && req.headers.origin !== `http://${req.headers.host}`))) return err(res, 403, 'csrf', 'missing or wrong CSRF token');
	if (UPSTREAM && !(req.method === 'GET' && /\/cancel$/.test(p))) return proxy(req, res, body);
	let m;
	if (p === '/api/v1/builds' && req.method === 'POST') {
		let r;
		try { r = JSON.parse(body); } catch { return err(res, 400, 'invalid_json', 'invalid JSON'); }
		const bad = (r.packages || []).findIndex((x) => !/^[a-z0-9][a-z0-9+.-]+$/.test(x));
		if (bad >= 0) return err(res, 422, 'invalid_recipe', `packages[${bad}]: "${r.packages[bad]}" is not a valid Debian package name`);
		for (const [i, ov] of (r.overlays || []).entries())
			for (const [j, f] of (ov.files || []).entries())
				if (!String(f.path).startsWith('/')) return err(res, 422, 'invalid_recipe', `overlays[${i}].files[${j}].path: must be absolute`);
		const b = newBuild(r, sess.owner);
		return send(res, 202, { build: pub(b), cached: false, coalesced: false }, null, { Location: b.links.self });
	}
	if (p === '/api/v1/builds' && req.method === 'GET') {
		const st = url.searchParams.get('status');
		const list = builds.filter((b) => !st || b.status === st);
		const start = Number(url.searchParams.get('cursor') || 0), limit = Number(url.searchParams.get('limit') || 20);
		return send(res, 200, { builds: list.slice(start, start + limit).map(pub), next_cursor: start + limit < list.length ? String(start + limit) : null });
	}
	if ((m = /^\/api\/v1\/builds\/([^/]+)(\/.*)?$/.exec(p))) {
		const b = builds.find((x) => x.id === m[1]);
		if (!b) return err(res, 404, 'not_found', 'no such build');
		if (!m[2]) return send(res, 200, pub(b));
		if (m[2] === '/cancel' && req.method !== 'POST') return err(res, 405, 'method_not_allowed', 'use POST');
		if (m[2] === '/cancel' && req.method === 'POST') {
			if (['completed', 'failed', 'cancelled'].includes(b.status)) return err(res, 409, 'conflict', 'build already finished');
			b.status = 'cancelled'; b.error = 'cancelled'; b.completed_at = new Date().toISOString();
			return send(res, 200, pub(b));
		}
		if (m[2] === '/logs') {
			if (!(req.headers.accept || '').includes('text/event-stream')) return send(res, 200, logs.get(b.id).join('\n'), 'text/plain; charset=utf-8');
			res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Content-Security-Policy': CSP, 'Cache-Control': 'no-store' });
			let seq = Number(req.headers['last-event-id'] || 0);
			const tick = setInterval(() => {
				const l = logs.get(b.id);
				while (seq < l.length) { seq++; res.write(`id: ${seq}\nevent: log\ndata: ${l[seq - 1]}\n\n`); }
				if (['completed', 'failed', 'cancelled'].includes(b.status)) {
					res.write(`event: status\ndata: ${JSON.stringify(pub(b))}\n\n`);
					clearInterval(tick); res.end();
				}
			}, 200);
			req.on('close', () => clearInterval(tick));
			return undefined;
		}
		if (m[2].startsWith('/artifacts/') && b._data) return send(res, 200, b._data, 'application/octet-stream');
		return err(res, 404, 'not_found', 'no such thing');
	}
	return err(res, 404, 'not_found', 'no route');
}).listen(port, '127.0.0.1', () => console.log(`mock kiln on http://127.0.0.1:${port}/ (token ${TOKEN})`));
