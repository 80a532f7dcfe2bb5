// End-to-end tests of kiln's web UI: the real `kiln serve` binary, driven in
// Debian's headless Chromium through playwright-core (no downloaded browser).
//
//   KILN             the binary (default build/src/cli/kiln)
//   KILN_TEST_STATE  the state dir whose bootstrapped base (and package store)
//                    tests/image set up (default /var/tmp/kiln-test-state); the
//                    server gets a fresh state dir beside it whose bases/ and
//                    cas/ link there, so it owns its own database and lock while
//                    reusing the base
//   CHROMIUM         the browser (default /usr/bin/chromium)
//
// For development only: KILN_UI_URL + KILN_UI_TOKEN point the test at a
// server that is already running instead of starting one.
//
// Run through tests/browser/run.sh (npm ci, then node --test).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const KILN = path.resolve(ROOT, process.env.KILN || 'build/src/cli/kiln');
const STATE = process.env.KILN_TEST_STATE || '/var/tmp/kiln-test-state';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = path.join(HERE, 'screenshots');
const NONCE = crypto.randomBytes(6).toString('hex');
const XSS_NAME = '<img src=x onerror=window.__xss=1>';
const XSS_LOG = '<script>window.__xss=1</script>';
const BUILD_TIMEOUT = 15 * 60 * 1000;

let server = null;     // the kiln serve child process
let serverLog = '';
let base = '';         // http://127.0.0.1:PORT
let token = '';
let userDir = '';
let stateDir = '';     // the server's own state dir (bases/ and cas/ shared)
let ctx = null;        // persistent browser context (fresh user-data-dir)
let page = null;
let builtId = '';      // the completed minimal build
const pageErrors = [];

/* ---- helpers ------------------------------------------------------------- */

function run(args, timeoutMs) {
	const p = spawnSync(KILN, args, { encoding: 'utf8', timeout: timeoutMs });
	if (p.status !== 0) throw new Error(`kiln ${args.join(' ')} failed (${p.status}): ${p.stderr}`);
	return p.stdout;
}

async function startServer() {
	server = spawn(KILN, ['serve', '--listen', '127.0.0.1:0', '--state-dir', stateDir, '--workers', '1'],
		{ stdio: ['ignore', 'pipe', 'pipe'] });
	server.stderr.on('data', (d) => { serverLog = (serverLog + d).slice(-20000); });
	base = await new Promise((resolve, reject) => {
		let out = '';
		const timer = setTimeout(() => reject(new Error(`kiln serve printed no URL: ${out} ${serverLog}`)), 30000);
		server.stdout.on('data', (d) => {
			out += d;
			const m = /(https?:\/\/[^\s]+)/.exec(out);
			if (m) { clearTimeout(timer); resolve(m[1].replace(/\/$/, '')); }
		});
		server.on('exit', (code) => { clearTimeout(timer); reject(new Error(`kiln serve exited ${code}: ${serverLog}`)); });
	});
}

async function shot(name) {
	fs.mkdirSync(SHOTS, { recursive: true });
	await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/* fetch from inside the page: same origin, the page's cookies. */
function pageFetch(url, init) {
	return page.evaluate(async ([u, i]) => {
		const r = await fetch(u, { credentials: 'same-origin', ...i });
		let body = null;
		try { body = await r.json(); } catch (e) { /* not JSON */ }
		return { status: r.status, body };
	}, [url, init || {}]);
}

async function csrfFromPage() {
	const r = await pageFetch('/api/v1/session');
	assert.equal(r.status, 200, 'GET /api/v1/session with the session cookie');
	assert.ok(r.body.csrf_token, 'session answer has csrf_token');
	return r.body.csrf_token;
}

async function newRecipe() {
	await page.goto(`${base}/#/new`);
	await page.getByRole('heading', { name: 'New build' }).waitFor();
	await page.getByRole('button', { name: 'Start over' }).click();
}

async function addStep(text) {
	await page.getByRole('button', { name: 'Add step' }).click();
	await page.locator('input.step').last().fill(text);
}

async function statusText() {
	return (await page.locator('.status-line .badge').textContent()) || '';
}

async function waitStatus(re, timeout) {
	await page.locator('.status-line .badge', { hasText: re }).waitFor({ timeout });
}

function sha256File(p) {
	return crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
}

/* Later tests need the page served and a signed-in session; when an earlier
 * test found either missing they fail at once with that reason instead of
 * each waiting out its timeouts. */
let blocked = null;
function uiTest(name, opts, fn) {
	if (typeof opts === 'function') { fn = opts; opts = {}; }
	test(name, opts, async (t) => {
		if (blocked) throw new Error(`not run: ${blocked}`);
		try {
			return await fn(t);
		} catch (e) {
			/* CI shows little more than the failing test's message: put
			 * what the page and the server were doing into it. */
			e.message += `\n${await diagnose(name)}`;
			throw e;
		}
	});
}

async function diagnose(name) {
	const out = [];
	try {
		out.push(`page: ${page.url()}`);
		const st = await page.locator('.status-line').textContent({ timeout: 1000 }).catch(() => '(no status line)');
		out.push(`status line: ${st}`);
		const flashes = await page.locator('#flash, .notices, .build-error, .stream-state').allTextContents();
		out.push(`messages: ${JSON.stringify(flashes)}`);
		const log = await page.locator('#log').textContent({ timeout: 1000 }).catch(() => '');
		out.push(`log (end): ${JSON.stringify((log || '').slice(-1500))}`);
		await shot(`FAILED-${name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}`);
	} catch (e) {
		out.push(`(page state unavailable: ${e.message})`);
	}
	if (pageErrors.length) out.push(`page errors: ${JSON.stringify(pageErrors)}`);
	out.push(`kiln serve stderr (end):\n${serverLog.slice(-6000)}`);
	return out.join('\n');
}

/* ---- setup --------------------------------------------------------------- */

before(async () => {
	if (process.env.KILN_UI_URL) {
		base = process.env.KILN_UI_URL.replace(/\/$/, '');
		token = process.env.KILN_UI_TOKEN;
	} else {
		assert.ok(fs.existsSync(KILN), `kiln binary not found at ${KILN}; run 'make build' first`);
		fs.mkdirSync(STATE, { recursive: true });
		run(['setup', '--state-dir', STATE], 30 * 60 * 1000); /* idempotent; the first run bootstraps */
		/* beside STATE: same file system, so the store's renames work */
		stateDir = fs.mkdtempSync(path.join(path.dirname(path.resolve(STATE)), 'kiln-ui-test-'));
		for (const d of ['bases', 'cas']) {
			fs.mkdirSync(path.join(STATE, d), { recursive: true });
			fs.symlinkSync(path.join(path.resolve(STATE), d), path.join(stateDir, d));
		}
		const out = run(['token', 'create', '--state-dir', stateDir, '--name', 'tests/browser'], 60000);
		const m = /^(kiln_\S+)$/m.exec(out);
		assert.ok(m, `no kiln_ secret in the output of kiln token create: ${out}`);
		token = m[1];
		await startServer();
	}
	userDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-chromium-'));
	ctx = await chromium.launchPersistentContext(userDir, {
		executablePath: CHROMIUM,
		headless: true,
		args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
			'--disable-component-update', '--disable-sync', '--no-first-run'],
		viewport: { width: 1200, height: 900 },
		acceptDownloads: true,
	});
	page = ctx.pages()[0] || await ctx.newPage();
	page.setDefaultTimeout(30000);
	page.on('pageerror', (e) => pageErrors.push(e.message));
	page.on('console', (m) => {
		if (/Content Security Policy|Refused to/.test(m.text())) pageErrors.push(m.text());
	});
});

after(async () => {
	if (ctx) await ctx.close().catch(() => {});
	if (userDir) fs.rmSync(userDir, { recursive: true, force: true });
	if (server && server.exitCode === null) {
		server.kill('SIGTERM');
		await new Promise((r) => {
			const t = setTimeout(() => { server.kill('SIGKILL'); r(); }, 20000);
			server.on('exit', () => { clearTimeout(t); r(); });
		});
	}
	if (stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
});

/* ---- tests (in order; they share the browser and the session) ------------ */

test('the page and its assets are served with a strict CSP; every response has one', async () => {
	const paths = ['/', '/ui/app.js', '/ui/style.css', '/ui/examples/minimal.json', '/ui/examples/web-server.json',
		'/ui/examples/live.json', '/api/v1/health', '/api/v1/session', '/api/v1/builds', '/no/such/page'];
	for (const p of paths) {
		const r = await fetch(base + p);
		const csp = r.headers.get('content-security-policy');
		assert.ok(csp, `${p}: Content-Security-Policy missing (status ${r.status})`);
		assert.ok(!/unsafe-inline|unsafe-eval/.test(csp), `${p}: CSP allows unsafe-*: ${csp}`);
		assert.equal(r.headers.get('x-content-type-options'), 'nosniff', `${p}: X-Content-Type-Options`);
		const ct = r.headers.get('content-type');
		if (r.status !== 204 && ct) assert.match(ct, /charset=/i, `${p}: charset in Content-Type ${ct}`);
	}
	const index = await fetch(`${base}/`);
	if (index.status !== 200) blocked = `kiln serve does not serve the web UI at / (GET / answered ${index.status})`;
	assert.equal(index.status, 200, 'GET / serves the page');
	assert.match(index.headers.get('content-type'), /^text\/html/);
	const csp = index.headers.get('content-security-policy');
	for (const d of ["script-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"])
		assert.ok(csp.includes(d), `page CSP lacks ${d}: ${csp}`);
	const html = await index.text();
	assert.ok(!/<script(?![^>]*\bsrc=)[^>]*>/i.test(html), 'no inline <script> in index.html');
	assert.ok(!/\son[a-z]+=/i.test(html), 'no event-handler attributes in index.html');
	assert.ok(!/<style|style=/i.test(html), 'no inline styles in index.html');
	for (const [p, type] of [['/ui/app.js', /javascript/], ['/ui/style.css', /text\/css/], ['/ui/examples/minimal.json', /json/]]) {
		const r = await fetch(base + p);
		assert.equal(r.status, 200, `${p} served`);
		assert.match(r.headers.get('content-type'), type, `${p} content type`);
	}
	const ex = await (await fetch(`${base}/ui/examples/minimal.json`)).json();
	assert.deepEqual(ex, JSON.parse(fs.readFileSync(path.join(ROOT, 'examples/minimal.json'), 'utf8')),
		'/ui/examples/minimal.json is examples/minimal.json');
});

uiTest('sign in: the form on 401, a wrong token refused, the right one lets you in', async () => {
	await page.goto(`${base}/`);
	const input = page.getByLabel('API token');
	await input.waitFor();
	await shot('signin');
	await input.fill('kiln_not-a-real-token');
	await page.getByRole('button', { name: 'Sign in' }).click();
	await page.getByText('That token was not accepted').waitFor();
	assert.equal(await input.getAttribute('aria-invalid'), 'true');
	await input.fill(token);
	await input.press('Enter'); /* keyboard works */
	blocked = 'signing in did not work';
	await page.getByRole('heading', { name: 'Builds' }).waitFor();
	blocked = null;
	await page.getByRole('button', { name: 'Sign out' }).waitFor();
	await shot('builds');
});

uiTest('session cookie: __Host- prefix, HttpOnly, SameSite=Strict, Path=/, Secure, host-only', async () => {
	const cookies = await ctx.cookies(base);
	const s = cookies.find((c) => c.name === '__Host-kiln_session');
	assert.ok(s, `no __Host-kiln_session cookie; have ${cookies.map((c) => c.name).join(', ')}`);
	assert.equal(s.httpOnly, true, 'HttpOnly');
	assert.equal(s.sameSite, 'Strict', 'SameSite=Strict');
	assert.equal(s.path, '/', 'Path=/');
	assert.equal(s.secure, true, 'Secure (required by the __Host- prefix)');
	assert.ok(!s.domain.startsWith('.'), `host-only, no Domain attribute: ${s.domain}`);
	assert.ok(s.expires > Date.now() / 1000, 'the session expires (not a forever cookie)');
	assert.equal(await page.evaluate(() => document.cookie.includes('__Host-kiln_session')), false,
		'the session cookie is invisible to scripts');
	/* The raw header, as the server sends it. */
	const r = await fetch(`${base}/api/v1/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }) });
	assert.equal(r.status, 200);
	const setCookies = r.headers.getSetCookie ? r.headers.getSetCookie() : (r.headers.get('set-cookie') || '').split(/,(?=\s*[^;=\s]+=)/);
	const raw = setCookies.map((c) => c.trim()).find((c) => c.startsWith('__Host-kiln_session='));
	assert.ok(raw, 'Set-Cookie __Host-kiln_session');
	assert.match(raw, /;\s*HttpOnly/i);
	assert.match(raw, /;\s*SameSite=Strict/i);
	assert.match(raw, /;\s*Path=\/(;|$)/i);
	assert.match(raw, /;\s*Secure/i);
	assert.doesNotMatch(raw, /;\s*Domain=/i);
	const body = await r.json();
	assert.ok(body.owner && body.csrf_token && body.expires_at, 'session JSON: owner, csrf_token, expires_at');
});

uiTest('a bad package name shows the server\'s validation error next to its field', async () => {
	await newRecipe();
	await page.fill('#package-new', 'curl Bad');
	await page.click('#add-package');
	await page.click('#build');
	const pkg = page.locator('input.pkg').nth(1);
	assert.equal(await pkg.inputValue(), 'Bad');
	const errId = (await pkg.getAttribute('aria-describedby')).split(' ').pop();
	const err = page.locator(`#${errId}`);
	await err.filter({ hasText: /^packages\[1\]: / }).waitFor();
	assert.match(await err.textContent(), /^packages\[1\]: .*Bad/);
	assert.equal(await pkg.getAttribute('aria-invalid'), 'true');
	assert.equal(await page.evaluate(() => document.activeElement && document.activeElement.value), 'Bad',
		'focus moves to the bad field');
	/* next to it: the error follows the input in the same field */
	assert.equal(await pkg.evaluate((el, id) => el.closest('.field').contains(document.getElementById(id)), errId), true);
	/* an overlay path error lands on that path's input */
	await page.getByRole('button', { name: /Remove package 2/ }).click();
	await page.getByRole('button', { name: 'Add overlay' }).click();
	await page.locator('input.f-path').first().fill('etc/relative');
	await page.click('#build');
	const pathErr = page.locator('.ov-file .field-error', { hasText: /^overlays\[0\]\.files\[0\]\.path: / });
	await pathErr.waitFor();
	assert.equal(await page.locator('input.f-path').first().getAttribute('aria-invalid'), 'true');
	await shot('editor-validation');
});

uiTest('every editor control has a label', async () => {
	await newRecipe();
	await page.getByRole('button', { name: 'Add overlay' }).click();
	await addStep('RUN true');
	await page.fill('#package-new', 'curl');
	await page.click('#add-package');
	const unlabelled = await page.evaluate(() => [...document.querySelectorAll('main input, main select, main textarea')]
		.filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
		.map((el) => el.outerHTML));
	assert.deepEqual(unlabelled, []);
});

uiTest('build the minimal example from the editor: live log, completion, artifact SHA-256', { timeout: BUILD_TIMEOUT }, async () => {
	await newRecipe();
	await page.selectOption('#example', 'minimal');
	await page.click('#load-example');
	await page.getByText('Loaded the minimal example.').waitFor();
	assert.equal(await page.inputValue('#recipe-name'), 'minimal');
	assert.equal(await page.isChecked('#out-tar'), true);
	/* A step unique to this run keeps the build out of the cache, and a short
	 * sleep after it keeps the build running while its line is on screen. */
	await addStep(`RUN echo kiln-ui-${NONCE}`);
	await addStep('RUN sleep 4');
	await page.click('#build');
	await page.waitForURL(/#\/builds\/[0-9a-f-]+$/);
	builtId = decodeURIComponent(page.url().split('/').pop());
	await page.getByRole('heading', { name: 'minimal' }).waitFor();
	/* live: the echo's line is on the page while the build is still building */
	await page.locator('#log', { hasText: `kiln-ui-${NONCE}` }).waitFor({ timeout: BUILD_TIMEOUT });
	/* (the server's word, not the badge: the page polls the status, so its
	 * badge may still say `pending` when the first line is in) */
	const now = await pageFetch(`/api/v1/builds/${builtId}`);
	assert.equal((now.body.build || now.body).status, 'building', 'the log line arrived while building');
	await waitStatus(/^building$|^completed$/, 30000);
	await page.locator('#progress-label', { hasText: /^Step \d+ of \d+/ }).waitFor();
	await shot('build-running');
	/* reload mid-build: the log comes back and keeps streaming */
	await page.reload();
	await page.locator('#log', { hasText: `kiln-ui-${NONCE}` }).waitFor();
	await waitStatus(/^completed$/, BUILD_TIMEOUT);
	assert.match(await page.locator('#progress-label').textContent(), /done/);
	assert.equal(await page.locator('#cancel').isHidden(), true, 'no cancel button once finished');
	/* auto-scroll: the log is scrolled to its end */
	const gap = await page.locator('#log').evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
	assert.ok(gap < 30, `log follows its end (gap ${gap}px)`);
	const row = page.locator('tr[data-artifact="rootfs.tar.gz"]');
	await row.waitFor();
	const shown = (await row.locator('code.sha256').textContent()).trim();
	assert.match(shown, /^[0-9a-f]{64}$/);
	assert.match(await row.locator('td[data-label="Size"]').textContent(), /bytes/);
	await shot('build-completed');
	const [download] = await Promise.all([page.waitForEvent('download'), row.getByRole('link', { name: /Download/ }).click()]);
	const file = path.join(userDir, 'rootfs.tar.gz');
	await download.saveAs(file);
	assert.equal(sha256File(file), shown, 'the downloaded artifact has the SHA-256 shown on the page');
	fs.rmSync(file);
});

uiTest('the same recipe again is answered from the cache, with a notice', async () => {
	await page.goto(`${base}/#/new`);
	await page.getByRole('heading', { name: 'New build' }).waitFor();
	assert.ok((await page.locator('input.step').count()) >= 1, 'the draft survived navigation');
	await page.click('#build');
	await page.waitForURL(/#\/builds\/[0-9a-f-]+$/);
	await page.locator('#notice', { hasText: /cache|already queued or running/ }).waitFor();
	await waitStatus(/^completed$/, 60000);
	await shot('build-cached');
});

uiTest('build list: newest first, status filter, next page', async () => {
	await page.goto(`${base}/#/builds`);
	const first = page.locator('table.builds tbody tr').first();
	await first.waitFor();
	await page.selectOption('#status-filter', 'completed');
	await page.waitForURL(/status=completed/);
	await page.locator('table.builds tbody tr').first().waitFor();
	const statuses = await page.locator('table.builds tbody .badge').allTextContents();
	assert.ok(statuses.length > 0 && statuses.every((s) => s === 'completed'), `filtered: ${statuses}`);
	const r = await pageFetch('/api/v1/builds?limit=1');
	assert.equal(r.status, 200);
	if (r.body.next_cursor) {
		/* the page asks for 20 at a time; check the cursor link when there are more */
		const next = page.locator('#next-page');
		if (await next.count()) {
			const before = await page.locator('table.builds tbody code.id').allTextContents();
			await next.click();
			await page.waitForURL(/cursor=/);
			await page.locator('table.builds tbody tr').first().waitFor();
			const after = await page.locator('table.builds tbody code.id').allTextContents();
			assert.equal(after.filter((id) => before.includes(id)).length, 0, 'the next page holds other builds');
		}
	}
	await shot('builds-completed');
});

uiTest('XSS in a recipe name and a log line renders as text; cancel a running build', { timeout: BUILD_TIMEOUT }, async () => {
	await newRecipe();
	await page.fill('#recipe-name', XSS_NAME);
	await addStep(`RUN echo '${XSS_LOG}' ${NONCE}`);
	await addStep('RUN sleep 300');
	await page.click('#build');
	await page.waitForURL(/#\/builds\/[0-9a-f-]+$/);
	const id = decodeURIComponent(page.url().split('/').pop());
	const h1 = page.locator('h1');
	await h1.filter({ hasText: XSS_NAME }).waitFor();
	await page.locator('#log', { hasText: `${XSS_LOG} ${NONCE}` }).waitFor({ timeout: BUILD_TIMEOUT });
	await waitStatus(/^building$/, BUILD_TIMEOUT);
	assert.equal(await h1.textContent(), XSS_NAME, 'the name shows as text');
	assert.equal(await page.locator('main img').count(), 0, 'no <img> element was created');
	assert.equal(await page.locator('#log script').count(), 0, 'no <script> element in the log');
	assert.equal(await page.evaluate(() => window.__xss), undefined, 'no payload ran');
	await shot('build-xss-running');
	/* the list shows the name as text too */
	await page.goto(`${base}/#/builds`);
	await page.locator('table.builds a', { hasText: XSS_NAME }).first().waitFor();
	assert.equal(await page.locator('main img').count(), 0);
	/* cancel from the build page */
	await page.goto(`${base}/#/builds/${id}`);
	const cancel = page.getByRole('button', { name: 'Cancel build' });
	await cancel.waitFor();
	/* The answer to the cancel (status still `building`: the worker has not
	 * stopped yet) arrives after the log stream's final `cancelled`, as it
	 * may on a busy machine: the page must not go back to "building". */
	let answered = false;
	await page.route('**/api/v1/builds/*/cancel', async (route) => {
		const res = await route.fetch();
		await new Promise((r) => setTimeout(r, 1500));
		await route.fulfill({ response: res });
		answered = true;
	});
	await cancel.click();
	await waitStatus(/^cancelled$/, 30000);
	await page.waitForFunction(() => /Cancel requested|already finished|Cancel failed/.test(document.getElementById('flash').textContent), null, { timeout: 30000 });
	await page.unroute('**/api/v1/builds/*/cancel');
	assert.ok(answered, 'the delayed cancel answer reached the page');
	assert.match(await page.locator('#flash').textContent(), /Cancel requested/);
	assert.equal(await statusText(), 'cancelled', 'a late answer does not undo the final status');
	assert.equal(await cancel.isHidden(), true);
	assert.equal(await page.evaluate(() => window.__xss), undefined, 'no payload ran');
	await shot('build-cancelled');
	const again = await pageFetch(`/api/v1/builds/${id}/cancel`, { method: 'POST', headers: { 'X-CSRF-Token': await csrfFromPage() } });
	assert.equal(again.status, 409, 'cancelling a finished build: 409');
});

uiTest('CSRF: missing, wrong or another session\'s token → 403; cross-site → 403; bearer unaffected', async () => {
	assert.ok(builtId, 'needs the completed build');
	const url = `/api/v1/builds/${builtId}/cancel`; /* a finished build: a passing request answers 409 */
	const csrf = await csrfFromPage();
	assert.equal((await pageFetch(url, { method: 'POST' })).status, 403, 'no X-CSRF-Token');
	assert.equal((await pageFetch(url, { method: 'POST', headers: { 'X-CSRF-Token': 'x'.repeat(csrf.length) } })).status, 403, 'wrong token');
	const flipped = csrf.slice(0, -1) + (csrf.endsWith('A') ? 'B' : 'A');
	assert.equal((await pageFetch(url, { method: 'POST', headers: { 'X-CSRF-Token': flipped } })).status, 403, 'token with one character changed');
	/* another session's (valid) token does not work with this session's cookie */
	const other = await fetch(`${base}/api/v1/session`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ token }) });
	const otherCsrf = (await other.json()).csrf_token;
	assert.notEqual(otherCsrf, csrf);
	assert.equal((await pageFetch(url, { method: 'POST', headers: { 'X-CSRF-Token': otherCsrf } })).status, 403, 'another session\'s token');
	/* a new build without the token is refused too, and nothing is created */
	const sub = await pageFetch('/api/v1/builds', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"packages":[]}' });
	assert.equal(sub.status, 403, 'POST /api/v1/builds without X-CSRF-Token');
	assert.equal(sub.body && sub.body.error && typeof sub.body.error.code, 'string', 'error JSON');
	/* sign-out is state-changing as well */
	assert.equal((await pageFetch('/api/v1/session', { method: 'DELETE' })).status, 403, 'DELETE session without token');
	/* the right token passes the CSRF check (409: already finished) */
	assert.equal((await pageFetch(url, { method: 'POST', headers: { 'X-CSRF-Token': csrf } })).status, 409, 'right token');
	/* Sec-Fetch-Site and Origin (forbidden headers in page fetch: use the
	 * context's request API, which carries the browser's cookies) */
	const req = ctx.request;
	let r = await req.post(base + url, { headers: { 'X-CSRF-Token': csrf, 'Sec-Fetch-Site': 'cross-site' } });
	assert.equal(r.status(), 403, 'Sec-Fetch-Site: cross-site');
	r = await req.post(base + url, { headers: { 'X-CSRF-Token': csrf, 'Sec-Fetch-Site': 'same-site' } });
	assert.equal(r.status(), 403, 'Sec-Fetch-Site: same-site (another port or subdomain)');
	r = await req.post(base + url, { headers: { 'X-CSRF-Token': csrf, Origin: 'http://evil.example' } });
	assert.equal(r.status(), 403, 'foreign Origin');
	r = await req.post(base + url, { headers: { 'X-CSRF-Token': csrf, 'Sec-Fetch-Site': 'same-origin', Origin: base } });
	assert.equal(r.status(), 409, 'same-origin with the right token passes');
	/* no state change on GET */
	r = await req.get(base + url);
	assert.equal(r.status(), 405, 'GET on cancel: 405');
	/* bearer-token API calls need no CSRF token */
	const bearer = await fetch(base + url, { method: 'POST', headers: { Authorization: `Bearer ${token}` } });
	assert.equal(bearer.status, 409, 'bearer call without X-CSRF-Token is not a CSRF failure');
});

uiTest('phone width (375 px): no horizontal scrolling', async () => {
	await page.setViewportSize({ width: 375, height: 800 });
	for (const [hash, name] of [['#/builds', 'phone-builds'], ['#/new', 'phone-editor'], [`#/builds/${builtId}`, 'phone-build']]) {
		await page.goto(`${base}/${hash}`);
		await page.locator('h1').waitFor();
		await page.waitForTimeout(300);
		const w = await page.evaluate(() => document.documentElement.scrollWidth);
		assert.ok(w <= 375, `${hash}: page is ${w}px wide`);
		await shot(name);
	}
	await page.setViewportSize({ width: 1200, height: 900 });
});

uiTest('keyboard: visible focus on controls', async () => {
	await page.goto(`${base}/#/new`);
	await page.getByRole('heading', { name: 'New build' }).waitFor();
	await page.keyboard.press('Tab');
	const outline = await page.evaluate(() => {
		const el = document.activeElement;
		const s = getComputedStyle(el);
		return { tag: el.tagName, width: s.outlineWidth, style: s.outlineStyle };
	});
	assert.notEqual(outline.tag, 'BODY', 'Tab moves focus');
	assert.notEqual(outline.style, 'none', `focused ${outline.tag} shows an outline`);
});

let busyboxId = '';

uiTest('the base is a choice in the form; the busybox example builds on busybox', { timeout: BUILD_TIMEOUT }, async () => {
	run(['setup', '--state-dir', STATE, '--base', 'busybox'], 10 * 60 * 1000);
	await newRecipe();
	const bases = await page.locator('#base option').evaluateAll((os) => os.map((o) => o.value));
	assert.deepEqual(bases, ['debian/bookworm', 'busybox']);
	assert.equal(await page.inputValue('#base'), 'debian/bookworm', 'the default base');
	await page.selectOption('#example', 'busybox');
	await page.click('#load-example');
	await page.getByText('Loaded the busybox example.').waitFor();
	assert.equal(await page.inputValue('#base'), 'busybox');
	await addStep(`RUN echo kiln-ui-busybox-${NONCE}`);
	await page.click('#build');
	await page.waitForURL(/#\/builds\/[0-9a-f-]+$/);
	busyboxId = decodeURIComponent(page.url().split('/').pop());
	const sent = await pageFetch(`/api/v1/builds/${busyboxId}/recipe`);
	assert.equal(sent.body.base, 'busybox', 'the form sent the base chosen');
	await waitStatus(/^completed$/, BUILD_TIMEOUT);
	/* the list: duration, step, artifact links (images first) */
	await page.goto(`${base}/#/builds`);
	const row = page.locator('tr', { has: page.locator(`code.id:text-is("${busyboxId}")`) });
	await row.waitFor();
	assert.match(await row.locator('td.duration').textContent(), /\d s|min/);
	const links = await row.locator('td.artifacts a').allTextContents();
	assert.equal(links[0], 'rootfs.tar.gz', `images first: ${links}`);
	await shot('list-columns');
});

uiTest('the recipe view shows what was submitted; "Edit and rebuild" opens it in the editor', async () => {
	assert.ok(busyboxId, 'the busybox build of the previous test');
	await page.goto(`${base}/#/builds/${busyboxId}`);
	await page.locator('#recipe-box summary').click();
	await page.locator('#rebuild:not([disabled])').waitFor();
	assert.match(await page.locator('#recipe').textContent(), new RegExp(`kiln-ui-busybox-${NONCE}`));
	await shot('recipe-view');
	await page.click('#rebuild');
	await page.waitForURL(/#\/new$/);
	assert.equal(await page.inputValue('#recipe-name'), 'busybox-hello');
	assert.equal(await page.inputValue('#base'), 'busybox');
	const steps = await page.locator('input.step').evaluateAll((is) => is.map((i) => i.value));
	assert.ok(steps.includes(`RUN echo kiln-ui-busybox-${NONCE}`), `the steps came back: ${steps}`);
});

uiTest('a 50,000-line log renders (timing reported, not asserted)', { timeout: BUILD_TIMEOUT }, async () => {
	const r = await fetch(`${base}/api/v1/builds`, {
		method: 'POST',
		headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
		body: JSON.stringify({ name: 'big-log', base: 'busybox', outputs: ['tar'], steps: [`RUN echo ${NONCE}; seq 1 50000`] }),
	});
	assert.ok(r.status === 202 || r.status === 200, `submitted: ${r.status}`);
	const id = (await r.json()).id;
	await page.goto(`${base}/#/builds/${id}`);
	await waitStatus(/^completed$/, BUILD_TIMEOUT);
	/* the finished build's whole log, loaded fresh */
	const t0 = Date.now();
	await page.reload();
	await page.locator('#log', { hasText: /^50000$/m }).waitFor({ timeout: 120000 });
	const ms = Date.now() - t0;
	console.log(`# benchmark: a 50,000-line log rendered in ${(ms / 1000).toFixed(2)} s (target < 2 s)`);
	/* numbered lines, one group per phase, the step's group holds its output */
	const groups = page.locator('#log details.group');
	assert.ok(await groups.count() >= 3, 'a group per phase');
	const stepGroup = page.locator('#log details.group', { has: page.locator('summary', { hasText: /step 1 of 1: RUN echo/ }) });
	assert.equal(await stepGroup.count(), 1, 'the RUN step has its group');
	assert.match(await stepGroup.locator('summary .dur').textContent(), /\d s$/, 'with its time');
	const n = await stepGroup.locator('div.l', { hasText: /^25000\s*$/ }).getAttribute('data-n');
	assert.ok(Number(n) > 25000, `line numbers count every line (${n})`);
	/* collapsing the group hides its lines */
	await stepGroup.locator('summary').click();
	assert.equal(await stepGroup.evaluate((d) => d.open), false);
	/* the raw log is the whole text */
	const raw = await (await fetch(`${base}/api/v1/builds/${id}/logs`, { headers: { Authorization: `Bearer ${token}` } })).text();
	assert.equal(await page.locator('#raw-log').getAttribute('href'), `/api/v1/builds/${id}/logs`);
	assert.match(raw, /\n50000\n/);
	/* search: every match marked, the group reopened, the first in view */
	const want = raw.split('\n').filter((l) => l.includes('4999'));
	await page.fill('#log-search', '4999');
	await page.locator('#search-info', { hasText: new RegExp(`^${want.length} matches$`) }).waitFor();
	assert.equal(await stepGroup.evaluate((d) => d.open), true, 'a group with a match opens');
	assert.equal(await page.locator('#log div.l.hit').count(), want.length);
	assert.equal(await page.locator('#log div.l.hit.current').textContent(), `${want[0]}\n`);
	await page.press('#log-search', 'Enter');
	assert.equal(await page.locator('#log div.l.hit.current').textContent(), `${want[1]}\n`);
	await shot('big-log-search');
});

uiTest('sign out ends the session', async () => {
	const old = (await ctx.cookies(base)).find((c) => c.name === '__Host-kiln_session');
	await page.goto(`${base}/#/builds`);
	await page.getByRole('button', { name: 'Sign out' }).click();
	await page.getByLabel('API token').waitFor();
	await page.getByText('You are signed out.').waitFor();
	assert.equal((await pageFetch('/api/v1/session')).status, 401, 'no session after sign-out');
	/* the old cookie no longer works anywhere (revoked on the server) */
	const replay = await fetch(`${base}/api/v1/builds`, { headers: { Cookie: `__Host-kiln_session=${old.value}` } });
	assert.equal(replay.status, 401, 'the old session cookie is revoked');
	await shot('signed-out');
	assert.deepEqual(pageErrors, [], 'no script errors or CSP violations in the page');
});
