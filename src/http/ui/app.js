/* kiln web UI — plain JavaScript, no framework, no network but this origin.
 *
 * Security rules this file keeps (docs/web-ui.md):
 *  - Everything that came from a build, a recipe or the server is put into the
 *    page with textContent / text nodes, never innerHTML, so a recipe name or a
 *    log line holding HTML shows as text.
 *  - Links are built here from encodeURIComponent'd parts, never taken from
 *    data, so no javascript: URL can reach an href.
 *  - Every state-changing request (POST, DELETE) carries X-CSRF-Token, and
 *    every request is same-origin with credentials: 'same-origin'.
 *  - No inline scripts, styles or handler attributes: the CSP forbids them. */
'use strict';

(function () {
	const API = '/api/v1';
	const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
	const STATUSES = ['pending', 'building', 'completed', 'failed', 'cancelled'];
	const OUTPUTS = ['tar', 'squashfs', 'iso'];
	const EXAMPLES = [
		['busybox', 'busybox — the 2 MB busybox base, seconds to build'],
		['minimal', 'minimal — an empty Debian base, tarball'],
		['web-server', 'web-server — nginx with a site, tar + squashfs'],
		['live', 'live — a bootable live ISO that prints KILN-BOOT-OK'],
	];
	/* Recipe keys the editor has its own inputs for; the rest go to the
	 * "other settings" JSON box. */
	const EDITED = new Set(['name', 'base', 'packages', 'overlays', 'steps', 'outputs', 'locale', 'timezone']);
	const BASES = [
		['debian/bookworm', 'debian/bookworm — Debian 12, packages, bootable ISOs'],
		['busybox', 'busybox — 2 MB, no packages, tar and squashfs'],
	];
	const DRAFT_KEY = 'kiln.draft';
	const FOLLOW_KEY = 'kiln.followLog';

	const state = {
		session: null,   /* {owner, csrf_token, expires_at} or {owner: null} without auth */
		cleanups: [],    /* run when the view changes */
		afterSignIn: null,
	};

	/* ---- DOM helpers ------------------------------------------------------ */

	/* h('p', {class: 'x', on: {click: f}}, 'text', child) — strings become
	 * text nodes; attributes are set with setAttribute (never HTML). */
	function h(tag, attrs, ...children) {
		const el = document.createElement(tag);
		if (attrs) {
			for (const [k, v] of Object.entries(attrs)) {
				if (v === undefined || v === null || v === false) continue;
				if (k === 'on') {
					for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
				} else if (k === 'text') {
					el.textContent = String(v);
				} else if (k === 'value') {
					el.value = v;
				} else if (k === 'checked') {
					el.checked = !!v;
				} else {
					el.setAttribute(k, v === true ? '' : String(v));
				}
			}
		}
		append(el, children);
		return el;
	}

	function append(el, children) {
		for (const c of children.flat(Infinity)) {
			if (c === null || c === undefined || c === false) continue;
			el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
		}
		return el;
	}

	function clear(el) {
		while (el.firstChild) el.removeChild(el.firstChild);
		return el;
	}

	let uid = 0;
	const nextId = (p) => `${p}-${++uid}`;

	const $main = () => document.getElementById('main');

	function flash(msg, kind) {
		const f = document.getElementById('flash');
		clear(f);
		if (!msg) return;
		f.appendChild(h('p', { class: `flash-msg ${kind || 'info'}` }, msg));
	}

	/* ---- API -------------------------------------------------------------- */

	function cookie(name) {
		for (const part of document.cookie.split(';')) {
			const i = part.indexOf('=');
			if (i > 0 && part.slice(0, i).trim() === name) return decodeURIComponent(part.slice(i + 1).trim());
		}
		return null;
	}

	function csrfToken() {
		return (state.session && state.session.csrf_token) || cookie('__Host-kiln_csrf') || cookie('kiln_csrf') || '';
	}

	/* Returns {status, data, res}; data is the parsed JSON body or null.
	 * A 401 on anything but the session endpoint sends the user to sign in. */
	async function api(method, path, opts) {
		opts = opts || {};
		const headers = { Accept: 'application/json' };
		let body = opts.body;
		if (opts.json !== undefined) {
			headers['Content-Type'] = 'application/json';
			body = JSON.stringify(opts.json);
		}
		if (method !== 'GET' && method !== 'HEAD') {
			const t = csrfToken();
			if (t) headers['X-CSRF-Token'] = t;
		}
		let res;
		try {
			res = await fetch(path, { method, headers, body, credentials: 'same-origin', cache: 'no-store', redirect: 'error' });
		} catch (e) {
			return { status: 0, data: null, res: null, error: 'The server could not be reached.' };
		}
		let data = null;
		const ct = res.headers.get('Content-Type') || '';
		if (ct.includes('json')) {
			try { data = await res.json(); } catch (e) { data = null; }
		}
		const out = { status: res.status, data, res };
		if (!res.ok) out.error = errorText(out);
		if (res.status === 401 && !path.startsWith(`${API}/session`)) {
			state.session = null;
			state.afterSignIn = location.hash;
			showSignIn('Your session has ended. Please sign in again.');
			out.handled = true;
		}
		return out;
	}

	function errorText(r) {
		if (r.data && r.data.error && typeof r.data.error.message === 'string') return r.data.error.message;
		if (r.status === 0) return 'The server could not be reached.';
		return `The server answered ${r.status}${r.res && r.res.statusText ? ` ${r.res.statusText}` : ''}.`;
	}

	const buildPath = (id) => `${API}/builds/${encodeURIComponent(id)}`;

	/* ---- formatting ------------------------------------------------------- */

	function fmtSize(n) {
		if (typeof n !== 'number') return '';
		const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
		let v = n, u = 0;
		while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
		return u === 0 ? `${n} bytes` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]} (${n.toLocaleString('en')} bytes)`;
	}

	function fmtTime(iso) {
		if (!iso) return null;
		const d = new Date(iso);
		if (isNaN(d)) return h('span', null, String(iso));
		/* the browser's locale, on a 24-hour clock; the ISO 8601 time on hover */
		return h('time', { datetime: iso, title: iso }, d.toLocaleString(undefined, { hourCycle: 'h23' }));
	}

	/* "12.3 s", "4 min 05 s": started to completed, or to now while running. */
	function fmtDuration(started, completed) {
		const a = Date.parse(started || '');
		if (Number.isNaN(a)) return '—';
		const b = completed ? Date.parse(completed) : Date.now();
		const d = Math.max(0, (b - a) / 1000);
		if (d < 60) return `${d.toFixed(1)} s`;
		if (d < 3600) return `${Math.floor(d / 60)} min ${String(Math.floor(d % 60)).padStart(2, '0')} s`;
		return `${Math.floor(d / 3600)} h ${String(Math.floor(d % 3600 / 60)).padStart(2, '0')} min`;
	}

	function stepText(b) {
		const p = b.progress || {};
		if (!p.total_steps) return '—';
		return TERMINAL.has(b.status) ? `${p.total_steps} steps` : `${p.current_step}/${p.total_steps}`;
	}

	/* Images first (iso, squashfs, tar), then the manifest and SBOM. */
	function artifactRank(name) {
		const order = ['.iso', '.squashfs', '.tar.gz', '.tar'];
		const i = order.findIndex((e) => String(name).endsWith(e));
		return i < 0 ? order.length : i;
	}

	function artifactLinks(b) {
		const arts = Array.isArray(b.artifacts) ? [...b.artifacts] : [];
		if (!arts.length) return '—';
		arts.sort((x, y) => artifactRank(x.name) - artifactRank(y.name) || String(x.name).localeCompare(String(y.name)));
		return arts.map((a) => h('a', { class: 'artifact', href: `${API}/builds/${encodeURIComponent(b.id)}/artifacts/${encodeURIComponent(a.name)}`, download: String(a.name) }, String(a.name)));
	}

	function statusBadge(status) {
		const s = STATUSES.includes(status) ? status : 'unknown';
		return h('span', { class: `badge badge-${s}` }, String(status));
	}

	/* ---- routing ---------------------------------------------------------- */

	function parseHash() {
		const raw = location.hash.replace(/^#/, '') || '/builds';
		const q = raw.indexOf('?');
		const path = q >= 0 ? raw.slice(0, q) : raw;
		const params = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : '');
		return { path, params };
	}

	function runCleanups() {
		const c = state.cleanups;
		state.cleanups = [];
		for (const f of c) {
			try { f(); } catch (e) { /* a view's cleanup must not stop the next view */ }
		}
	}

	function setNav(current) {
		const nav = document.getElementById('nav');
		nav.hidden = !state.session;
		for (const a of nav.querySelectorAll('a[data-nav]')) {
			if (a.dataset.nav === current) a.setAttribute('aria-current', 'page');
			else a.removeAttribute('aria-current');
		}
		const o = document.getElementById('owner');
		o.textContent = state.session && state.session.owner ? `Signed in as ${state.session.owner}` : '';
		document.getElementById('signout').hidden = !(state.session && state.session.csrf_token);
	}

	/* Puts a view in <main> and moves focus to its heading, so keyboard and
	 * screen-reader users land on the new content. */
	function mount(title, ...content) {
		const main = clear($main());
		const h1 = h('h1', { tabindex: '-1' }, title);
		main.appendChild(h1);
		append(main, content);
		document.title = `${typeof title === 'string' ? title : h1.textContent} — kiln`;
		h1.focus({ preventScroll: true });
		return h1;
	}

	function route() {
		runCleanups();
		flash('');
		if (!state.session) {
			showSignIn();
			return;
		}
		const { path, params } = parseHash();
		let m;
		if (path === '/builds' || path === '/' || path === '') {
			setNav('builds');
			viewList(params);
		} else if (path === '/new') {
			setNav('new');
			viewEditor();
		} else if ((m = /^\/builds\/([A-Za-z0-9-]{1,64})$/.exec(path))) {
			setNav('');
			viewBuild(m[1]);
		} else if (path === '/signin') {
			location.hash = '#/builds';
		} else {
			setNav('');
			mount('Not found', h('p', null, 'There is no such page. ', h('a', { href: '#/builds' }, 'Go to the build list.')));
		}
	}

	/* ---- session ---------------------------------------------------------- */

	async function loadSession() {
		const r = await api('GET', `${API}/session`);
		if (r.status === 200 && r.data) {
			state.session = r.data;
			return true;
		}
		if (r.status === 404 || r.status === 405) {
			/* A server without sessions (run with --no-auth): the API answers
			 * without credentials, so the page works without signing in. */
			const probe = await api('GET', `${API}/builds?limit=1`);
			if (probe.status === 200) {
				state.session = { owner: null };
				return true;
			}
		}
		return false;
	}

	function showSignIn(message) {
		runCleanups();
		setNav('');
		if (location.hash && !location.hash.startsWith('#/signin')) state.afterSignIn = location.hash;
		const errId = nextId('err');
		const err = h('p', { id: errId, class: 'field-error', role: 'alert' });
		const input = h('input', {
			id: 'token', name: 'token', type: 'password', autocomplete: 'current-password',
			spellcheck: 'false', required: true, 'aria-describedby': `token-help ${errId}`,
		});
		const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
		const form = h('form', { class: 'card signin', novalidate: true },
			h('div', { class: 'field' },
				h('label', { for: 'token' }, 'API token'),
				input,
				h('p', { id: 'token-help', class: 'help' },
					'A token starts with kiln_. Create one on the server with ',
					h('code', null, 'kiln token create'), '.'),
				err),
			h('div', { class: 'actions' }, button));
		form.addEventListener('submit', async (ev) => {
			ev.preventDefault();
			err.textContent = '';
			input.removeAttribute('aria-invalid');
			const token = input.value.trim();
			if (!token) {
				err.textContent = 'Enter your API token.';
				input.setAttribute('aria-invalid', 'true');
				input.focus();
				return;
			}
			button.disabled = true;
			const r = await api('POST', `${API}/session`, { json: { token } });
			button.disabled = false;
			if (r.status === 200 && r.data) {
				state.session = r.data;
				input.value = '';
				flash('');
				const to = state.afterSignIn && state.afterSignIn !== '#/signin' ? state.afterSignIn : '#/builds';
				state.afterSignIn = null;
				if (location.hash === to) route();
				else location.hash = to;
				return;
			}
			err.textContent = r.status === 401 ? 'That token was not accepted. Check it and try again.' : r.error;
			input.setAttribute('aria-invalid', 'true');
			input.focus();
		});
		mount('Sign in to kiln', message ? h('p', { class: 'notice' }, message) : null, form);
		input.focus();
	}

	async function signOut() {
		const r = await api('DELETE', `${API}/session`);
		if (r.status >= 400 && r.status !== 401) {
			flash(`Sign out failed: ${r.error}`, 'error');
			return;
		}
		state.session = null;
		sessionStorage.removeItem(DRAFT_KEY);
		state.afterSignIn = '#/builds';
		history.replaceState(null, '', '#/signin');
		showSignIn('You are signed out.');
	}

	/* ---- build list ------------------------------------------------------- */

	function viewList(params) {
		const status = STATUSES.includes(params.get('status')) ? params.get('status') : '';
		const cursor = params.get('cursor') || '';
		const select = h('select', { id: 'status-filter', name: 'status' },
			h('option', { value: '' }, 'All'),
			STATUSES.map((s) => h('option', { value: s }, s)));
		select.value = status;
		select.addEventListener('change', () => {
			location.hash = select.value ? `#/builds?status=${encodeURIComponent(select.value)}` : '#/builds';
		});
		const region = h('div', { class: 'list-region', 'aria-live': 'polite', 'aria-busy': 'true' }, h('p', null, 'Loading builds…'));
		mount('Builds',
			h('div', { class: 'toolbar' },
				h('div', { class: 'field inline' }, h('label', { for: 'status-filter' }, 'Status'), select),
				h('a', { class: 'button primary', href: '#/new' }, 'New build')),
			region);

		let timer = null;
		let alive = true;
		state.cleanups.push(() => { alive = false; clearTimeout(timer); });

		async function load() {
			const q = new URLSearchParams();
			if (status) q.set('status', status);
			if (cursor) q.set('cursor', cursor);
			q.set('limit', '20');
			const r = await api('GET', `${API}/builds?${q}`);
			if (!alive || r.handled) return;
			region.setAttribute('aria-busy', 'false');
			if (r.status !== 200 || !r.data) {
				clear(region).appendChild(h('p', { class: 'error' }, `Could not load the builds: ${r.error}`));
				return;
			}
			renderList(r.data);
			/* Keep the first page fresh while something is still running. */
			if (!cursor && (r.data.builds || []).some((b) => !TERMINAL.has(b.status)))
				timer = setTimeout(load, 3000);
		}

		function renderList(data) {
			const builds = Array.isArray(data.builds) ? data.builds : [];
			clear(region);
			if (!builds.length) {
				region.appendChild(h('p', { class: 'empty' },
					status ? `No ${status} builds. ` : 'No builds yet. ',
					h('a', { href: '#/new' }, 'Start a new build.')));
			} else {
				const rows = builds.map((b) => h('tr', null,
					h('td', { 'data-label': 'Name' },
						h('a', { href: `#/builds/${encodeURIComponent(b.id)}` }, b.name ? String(b.name) : `(unnamed) ${String(b.id).slice(0, 8)}`)),
					h('td', { 'data-label': 'Status' }, statusBadge(b.status), b.cached ? h('span', { class: 'tag' }, 'cached') : null,
						b.status === 'failed' && b.error ? h('div', { class: 'reason' }, String(b.error).split('\n')[0]) : null),
					h('td', { 'data-label': 'Duration', class: 'duration' }, fmtDuration(b.started_at, b.completed_at)),
					h('td', { 'data-label': 'Step', class: 'step' }, stepText(b)),
					h('td', { 'data-label': 'Created' }, fmtTime(b.created_at)),
					h('td', { 'data-label': 'Artifacts', class: 'artifacts' }, artifactLinks(b)),
					h('td', { 'data-label': 'Build ID' }, h('code', { class: 'id' }, String(b.id)))));
				region.appendChild(h('table', { class: 'builds' },
					h('caption', { class: 'visually-hidden' }, 'Builds, newest first'),
					h('thead', null, h('tr', null, ['Name', 'Status', 'Duration', 'Step', 'Created', 'Artifacts', 'Build ID'].map((t) => h('th', { scope: 'col' }, t)))),
					h('tbody', null, rows)));
			}
			const pager = h('nav', { class: 'pager', 'aria-label': 'Pages' });
			const base = status ? `status=${encodeURIComponent(status)}&` : '';
			if (cursor) pager.appendChild(h('a', { class: 'button', href: status ? `#/builds?status=${encodeURIComponent(status)}` : '#/builds' }, 'First page'));
			if (data.next_cursor)
				pager.appendChild(h('a', { class: 'button', id: 'next-page', href: `#/builds?${base}cursor=${encodeURIComponent(String(data.next_cursor))}` }, 'Next page'));
			if (pager.firstChild) region.appendChild(pager);
		}
		load();
	}

	/* ---- recipe editor ---------------------------------------------------- */

	function loadDraft() {
		try {
			const d = JSON.parse(sessionStorage.getItem(DRAFT_KEY) || 'null');
			if (d && typeof d === 'object' && !Array.isArray(d)) return d;
		} catch (e) { /* a broken draft is dropped */ }
		return { name: '', packages: [], outputs: ['tar'] };
	}

	function viewEditor() {
		const general = h('div', { class: 'form-errors', role: 'alert' });
		const form = h('form', { class: 'editor', novalidate: true });
		let fields = new Map(); /* JSON path → input, filled by serialize() */

		/* An input row: label, control, error paragraph wired with
		 * aria-describedby. Returns the wrapper; .control is the input. */
		function field(labelText, control, opts) {
			opts = opts || {};
			const id = control.id || nextId('f');
			control.id = id;
			const errId = `${id}-err`;
			const err = h('p', { id: errId, class: 'field-error' });
			const described = [opts.helpId, errId].filter(Boolean).join(' ');
			control.setAttribute('aria-describedby', described);
			const wrap = h('div', { class: `field${opts.cls ? ` ${opts.cls}` : ''}` },
				h('label', { for: id, class: opts.hideLabel ? 'visually-hidden' : null }, labelText),
				opts.row ? h('div', { class: 'row' }, control, opts.row) : control,
				opts.help ? h('p', { id: opts.helpId, class: 'help' }, opts.help) : null,
				err);
			control._err = err;
			return wrap;
		}

		/* --- name */
		const nameInput = h('input', { type: 'text', id: 'recipe-name', name: 'name', maxlength: '1024', autocomplete: 'off' });

		/* --- packages */
		const pkgList = h('ul', { class: 'list packages', 'aria-label': 'Packages' });
		const pkgAdd = h('input', { type: 'text', id: 'package-new', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. curl' });
		function addPackage(value, focus) {
			const input = h('input', { type: 'text', class: 'pkg', autocomplete: 'off', spellcheck: 'false', value });
			const li = h('li', null);
			const remove = h('button', { type: 'button', class: 'remove' }, 'Remove');
			remove.addEventListener('click', () => {
				const next = li.nextElementSibling || li.previousElementSibling;
				li.remove();
				renumber();
				(next ? next.querySelector('input') : pkgAdd).focus();
				saveDraft();
			});
			li.appendChild(field('', input, { row: remove, hideLabel: true }));
			pkgList.appendChild(li);
			renumber();
			if (focus) input.focus();
		}
		function renumber() {
			[...pkgList.children].forEach((li, i) => {
				const input = li.querySelector('input');
				const v = input.value || 'empty';
				li.querySelector('label').textContent = `Package ${i + 1}`;
				li.querySelector('button.remove').setAttribute('aria-label', `Remove package ${i + 1} (${v})`);
			});
			[...stepList.children].forEach((li, i) => {
				li.querySelector('label').textContent = `Step ${i + 1}`;
				li.querySelector('button.remove').setAttribute('aria-label', `Remove step ${i + 1}`);
			});
			[...ovList.children].forEach((fs, i) => {
				fs.querySelector('legend').textContent = `Overlay ${i + 1}`;
				fs.querySelector('button.remove-overlay').setAttribute('aria-label', `Remove overlay ${i + 1}`);
				[...fs.querySelectorAll('.ov-file')].forEach((ff, j) => {
					ff.querySelector('legend').textContent = `File ${j + 1} of overlay ${i + 1}`;
					ff.querySelector('button.remove-file').setAttribute('aria-label', `Remove file ${j + 1} of overlay ${i + 1}`);
				});
			});
		}
		const pkgAddBtn = h('button', { type: 'button', id: 'add-package' }, 'Add package');
		function addFromInput() {
			const names = pkgAdd.value.split(/[\s,]+/).filter(Boolean);
			if (!names.length) { pkgAdd.focus(); return; }
			for (const n of names) addPackage(n, false);
			pkgAdd.value = '';
			pkgAdd.focus();
			saveDraft();
		}
		pkgAddBtn.addEventListener('click', addFromInput);
		pkgAdd.addEventListener('keydown', (ev) => {
			if (ev.key === 'Enter') { ev.preventDefault(); addFromInput(); }
		});

		/* --- overlays */
		const ovList = h('div', { class: 'overlays' });
		function addOverlay(ov, focus) {
			ov = ov && typeof ov === 'object' ? ov : {};
			const nameIn = h('input', { type: 'text', class: 'ov-name', autocomplete: 'off', value: ov.name || '' });
			const files = h('div', { class: 'ov-files' });
			const fs = h('fieldset', { class: 'overlay' }, h('legend', null, 'Overlay'));
			const rm = h('button', { type: 'button', class: 'remove remove-overlay' }, 'Remove overlay');
			rm.addEventListener('click', () => { fs.remove(); renumber(); saveDraft(); ovAddBtn.focus(); });
			const addFileBtn = h('button', { type: 'button' }, 'Add file');
			addFileBtn.addEventListener('click', () => { addFile(files, {}, true); renumber(); saveDraft(); });
			append(fs, [field('Overlay name', nameIn, { row: rm }), files, h('div', { class: 'actions' }, addFileBtn)]);
			fs._name = nameIn;
			fs._files = files;
			ovList.appendChild(fs);
			for (const f of Array.isArray(ov.files) ? ov.files : []) addFile(files, f, false);
			renumber();
			if (focus) nameIn.focus();
		}
		function addFile(container, f, focus) {
			f = f && typeof f === 'object' ? f : {};
			const path = h('input', { type: 'text', class: 'f-path', autocomplete: 'off', spellcheck: 'false', placeholder: '/etc/motd', value: f.path || '' });
			const mode = h('input', { type: 'text', class: 'f-mode', autocomplete: 'off', inputmode: 'numeric', placeholder: '0644', maxlength: '4', value: f.mode || '' });
			const content = h('textarea', { class: 'f-content', rows: '4', spellcheck: 'false', value: typeof f.content === 'string' ? f.content : '' });
			content.value = typeof f.content === 'string' ? f.content : '';
			const ff = h('fieldset', { class: 'ov-file' }, h('legend', null, 'File'));
			const rm = h('button', { type: 'button', class: 'remove remove-file' }, 'Remove file');
			rm.addEventListener('click', () => { const fsx = ff.closest('fieldset.overlay'); ff.remove(); renumber(); saveDraft(); fsx.querySelector('input').focus(); });
			append(ff, [
				h('div', { class: 'grid2' }, field('Path', path), field('Mode', mode, { cls: 'narrow' })),
				field('Content', content),
				h('div', { class: 'actions' }, rm)]);
			ff._path = path; ff._mode = mode; ff._content = content;
			container.appendChild(ff);
			if (focus) path.focus();
		}
		const ovAddBtn = h('button', { type: 'button' }, 'Add overlay');
		ovAddBtn.addEventListener('click', () => { addOverlay({ name: '', files: [{}] }, true); saveDraft(); });

		/* --- steps */
		const stepList = h('ol', { class: 'list steps', 'aria-label': 'Steps' });
		function addStep(value, focus) {
			const input = h('input', { type: 'text', class: 'step', autocomplete: 'off', spellcheck: 'false', value, placeholder: 'RUN echo hello' });
			const li = h('li', null);
			const rm = h('button', { type: 'button', class: 'remove' }, 'Remove');
			rm.addEventListener('click', () => {
				const next = li.nextElementSibling || li.previousElementSibling;
				li.remove(); renumber(); saveDraft();
				(next ? next.querySelector('input') : stepAddBtn).focus();
			});
			li.appendChild(field('Step', input, { row: rm, hideLabel: true }));
			stepList.appendChild(li);
			renumber();
			if (focus) input.focus();
		}
		const stepAddBtn = h('button', { type: 'button' }, 'Add step');
		stepAddBtn.addEventListener('click', () => { addStep('', true); saveDraft(); });

		/* --- outputs */
		const outBoxes = OUTPUTS.map((o) => h('input', { type: 'checkbox', id: `out-${o}`, name: 'outputs', value: o }));
		const outErr = h('p', { id: 'outputs-err', class: 'field-error' });
		const outFs = h('fieldset', { class: 'outputs', 'aria-describedby': 'outputs-err' }, h('legend', null, 'Outputs'),
			h('div', { class: 'checks' }, outBoxes.map((b) => h('label', { class: 'check', for: b.id }, b, ` ${b.value}`))), outErr);
		outFs._err = outErr;

		/* --- other settings */
		const baseSel = h('select', { id: 'base', name: 'base' }, BASES.map(([v, t]) => h('option', { value: v }, t)));
		const locale = h('input', { type: 'text', autocomplete: 'off', placeholder: 'en_US.UTF-8' });
		const timezone = h('input', { type: 'text', autocomplete: 'off', placeholder: 'UTC' });
		const other = h('textarea', { id: 'other', rows: '5', spellcheck: 'false', class: 'mono' });

		/* --- context */
		const context = h('input', { type: 'file', id: 'context', name: 'context' });
		const clearCtx = h('button', { type: 'button' }, 'Clear');
		clearCtx.addEventListener('click', () => { context.value = ''; });

		/* --- example / import / export */
		const exSel = h('select', { id: 'example' }, EXAMPLES.map(([v, t]) => h('option', { value: v }, t)));
		const exBtn = h('button', { type: 'button', id: 'load-example' }, 'Load example');
		exBtn.addEventListener('click', async () => {
			const r = await fetch(`/ui/examples/${encodeURIComponent(exSel.value)}.json`, { credentials: 'same-origin' }).catch(() => null);
			if (!r || !r.ok) { showGeneral('Could not load the example.'); return; }
			try {
				fill(await r.json());
				flash(`Loaded the ${exSel.value} example.`);
				nameInput.focus();
			} catch (e) { showGeneral('The example is not valid JSON.'); }
		});
		const importIn = h('input', { type: 'file', id: 'import', accept: 'application/json,.json' });
		importIn.addEventListener('change', async () => {
			const f = importIn.files && importIn.files[0];
			if (!f) return;
			try {
				const obj = JSON.parse(await f.text());
				if (!obj || typeof obj !== 'object' || Array.isArray(obj)) throw new Error('not an object');
				fill(obj);
				flash(`Imported ${f.name}.`);
			} catch (e) {
				showGeneral(`${f.name} is not a recipe: ${e.message}`);
			}
			importIn.value = '';
		});
		const exportBtn = h('button', { type: 'button', id: 'export' }, 'Export JSON');
		exportBtn.addEventListener('click', () => {
			const s = serialize();
			if (!s) return;
			const blob = new Blob([`${JSON.stringify(s.recipe, null, 2)}\n`], { type: 'application/json' });
			const url = URL.createObjectURL(blob);
			const a = h('a', { href: url, download: `${(s.recipe.name || 'recipe').replace(/[^A-Za-z0-9._-]+/g, '_')}.json` });
			document.body.appendChild(a);
			a.click();
			a.remove();
			setTimeout(() => URL.revokeObjectURL(url), 1000);
		});
		const resetBtn = h('button', { type: 'button', class: 'link' }, 'Start over');
		resetBtn.addEventListener('click', () => { fill({ name: '', packages: [], outputs: ['tar'] }); nameInput.focus(); });

		const submit = h('button', { type: 'submit', class: 'primary', id: 'build' }, 'Build');

		append(form, [
			general,
			h('section', { class: 'card', 'aria-labelledby': 'sec-start' },
				h('h2', { id: 'sec-start' }, 'Start from'),
				h('div', { class: 'toolbar wrap' },
					field('Example', exSel, { row: exBtn }),
					field('Import recipe JSON', importIn),
					h('div', { class: 'field' }, h('span', { class: 'label' }, 'Export'), h('div', { class: 'row' }, exportBtn, resetBtn)))),
			h('section', { class: 'card', 'aria-labelledby': 'sec-recipe' },
				h('h2', { id: 'sec-recipe' }, 'Recipe'),
				field('Name', nameInput, { help: 'A label for people; it does not change the build.', helpId: 'name-help' }),
				field('Base', baseSel, { help: 'The system the image starts from. busybox builds in seconds but has no packages and no ISO.', helpId: 'base-help' }),
				h('h3', null, 'Packages'),
				pkgList,
				field('Add packages', pkgAdd, { row: pkgAddBtn, help: 'Debian package names; separate several with spaces.', helpId: 'pkg-help' })),
			h('section', { class: 'card', 'aria-labelledby': 'sec-ov' },
				h('h2', { id: 'sec-ov' }, 'Files'),
				h('p', { class: 'help' }, 'Overlay files are written into the image: an absolute path, an octal mode (default 0644) and the content.'),
				ovList, h('div', { class: 'actions' }, ovAddBtn)),
			h('section', { class: 'card', 'aria-labelledby': 'sec-steps' },
				h('h2', { id: 'sec-steps' }, 'Steps'),
				h('p', { class: 'help' }, 'Run in order: RUN cmd, ENV K=V, USER name, WORKDIR /dir, COPY src dst (from the context archive).'),
				stepList, h('div', { class: 'actions' }, stepAddBtn)),
			h('section', { class: 'card', 'aria-labelledby': 'sec-out' },
				h('h2', { id: 'sec-out' }, 'Output and settings'),
				outFs,
				h('div', { class: 'grid2' }, field('Locale', locale), field('Time zone', timezone)),
				field('Other settings (JSON)', other, { help: 'base, resources, healthcheck, source_date_epoch — see docs/recipe.md.', helpId: 'other-help' }),
				field('Context archive (optional)', context, { row: clearCtx, help: 'A tar archive that COPY steps read from.', helpId: 'ctx-help' })),
			h('div', { class: 'actions submit' }, submit)]);

		form.addEventListener('input', () => saveDraft());
		form.addEventListener('change', () => saveDraft());

		function fill(r) {
			clearErrors();
			nameInput.value = typeof r.name === 'string' ? r.name : '';
			baseSel.value = BASES.some(([v]) => v === r.base) ? r.base : 'debian/bookworm';
			clear(pkgList);
			for (const p of Array.isArray(r.packages) ? r.packages : []) addPackage(String(p), false);
			clear(ovList);
			for (const ov of Array.isArray(r.overlays) ? r.overlays : []) addOverlay(ov, false);
			clear(stepList);
			for (const s of Array.isArray(r.steps) ? r.steps : []) addStep(String(s), false);
			const outs = Array.isArray(r.outputs) ? r.outputs : ['tar'];
			for (const b of outBoxes) b.checked = outs.includes(b.value);
			locale.value = typeof r.locale === 'string' ? r.locale : '';
			timezone.value = typeof r.timezone === 'string' ? r.timezone : '';
			const rest = {};
			for (const [k, v] of Object.entries(r)) if (!EDITED.has(k)) rest[k] = v;
			other.value = Object.keys(rest).length ? JSON.stringify(rest, null, 2) : '';
			renumber();
			saveDraft();
		}

		/* Reads the form into a recipe; records which input each JSON path
		 * came from so a 422's path can be shown next to it. */
		function serialize(quiet) {
			fields = new Map();
			const recipe = {};
			if (nameInput.value !== '') { recipe.name = nameInput.value; fields.set('name', nameInput); }
			recipe.base = baseSel.value;
			fields.set('base', baseSel);
			recipe.packages = [];
			fields.set('packages', pkgAdd);
			for (const input of pkgList.querySelectorAll('input')) {
				const v = input.value.trim();
				if (!v) continue;
				fields.set(`packages[${recipe.packages.length}]`, input);
				recipe.packages.push(v);
			}
			const ovs = [...ovList.children];
			if (ovs.length) {
				recipe.overlays = [];
				fields.set('overlays', ovAddBtn);
				ovs.forEach((fs, i) => {
					const ov = { name: fs._name.value, files: [] };
					fields.set(`overlays[${i}]`, fs._name);
					fields.set(`overlays[${i}].name`, fs._name);
					fields.set(`overlays[${i}].files`, fs._name);
					[...fs._files.children].forEach((ff, j) => {
						const f = { path: ff._path.value };
						if (ff._content.value !== '') f.content = ff._content.value;
						if (ff._mode.value.trim() !== '') f.mode = ff._mode.value.trim();
						const p = `overlays[${i}].files[${j}]`;
						fields.set(p, ff._path);
						fields.set(`${p}.path`, ff._path);
						fields.set(`${p}.mode`, ff._mode);
						fields.set(`${p}.content`, ff._content);
						ov.files.push(f);
					});
					recipe.overlays.push(ov);
				});
			}
			const steps = [];
			fields.set('steps', stepAddBtn);
			for (const input of stepList.querySelectorAll('input')) {
				if (!input.value.trim()) continue;
				fields.set(`steps[${steps.length}]`, input);
				steps.push(input.value);
			}
			if (steps.length) recipe.steps = steps;
			recipe.outputs = outBoxes.filter((b) => b.checked).map((b) => b.value);
			fields.set('outputs', outFs);
			if (locale.value.trim()) { recipe.locale = locale.value.trim(); fields.set('locale', locale); }
			if (timezone.value.trim()) { recipe.timezone = timezone.value.trim(); fields.set('timezone', timezone); }
			if (other.value.trim()) {
				let rest;
				try {
					rest = JSON.parse(other.value);
					if (!rest || typeof rest !== 'object' || Array.isArray(rest)) throw new Error('expected a JSON object');
				} catch (e) {
					if (!quiet) showFieldError(other, `Other settings: ${e.message}`);
					return null;
				}
				for (const [k, v] of Object.entries(rest)) {
					if (EDITED.has(k)) continue;
					recipe[k] = v;
					fields.set(k, other);
				}
			}
			return { recipe, fields };
		}

		function saveDraft() {
			const s = serialize(true);
			if (!s) return;
			/* keep empty package rows out of the draft but keep the rest */
			try { sessionStorage.setItem(DRAFT_KEY, JSON.stringify(s.recipe)); } catch (e) { /* storage full or off */ }
		}

		function clearErrors() {
			clear(general);
			for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
			for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
		}

		function showGeneral(msg) {
			clear(general).appendChild(h('p', { class: 'error' }, msg));
			general.scrollIntoView({ block: 'nearest' });
		}

		function showFieldError(el, msg) {
			const err = el._err;
			if (!err) { showGeneral(msg); return; }
			err.textContent = msg;
			if (el.tagName === 'FIELDSET') {
				const first = el.querySelector('input');
				if (first) { first.setAttribute('aria-invalid', 'true'); first.focus(); }
			} else {
				el.setAttribute('aria-invalid', 'true');
				el.focus();
			}
			el.scrollIntoView({ block: 'center' });
		}

		/* "overlays[0].files[1].path: must be absolute" → the path input of
		 * file 2 of overlay 1; unknown or shortened paths fall back to their
		 * closest known parent, then to the message above the form. */
		function showServerError(msg) {
			const m = /^([A-Za-z_][A-Za-z0-9_]*(?:\[\d+\]|\.[A-Za-z_][A-Za-z0-9_]*)*):\s/.exec(msg);
			if (m) {
				let p = m[1];
				while (p) {
					const el = fields.get(p);
					if (el) {
						showFieldError(el, msg);
						return;
					}
					const cut = p.search(/(\[\d+\]|\.[A-Za-z_][A-Za-z0-9_]*)$/);
					p = cut > 0 ? p.slice(0, cut) : '';
				}
			}
			showGeneral(msg);
		}

		form.addEventListener('submit', async (ev) => {
			ev.preventDefault();
			clearErrors();
			const s = serialize();
			if (!s) return;
			if (!s.recipe.outputs.length) {
				showFieldError(outFs, 'outputs: choose at least one output.');
				return;
			}
			let opts;
			const file = context.files && context.files[0];
			if (file) {
				const fd = new FormData();
				fd.append('recipe', new Blob([JSON.stringify(s.recipe)], { type: 'application/json' }), 'recipe.json');
				fd.append('context', file, file.name);
				opts = { body: fd };
			} else {
				opts = { json: s.recipe };
			}
			submit.disabled = true;
			submit.textContent = 'Submitting…';
			const r = await api('POST', `${API}/builds`, opts);
			submit.disabled = false;
			submit.textContent = 'Build';
			if (r.handled) return;
			/* The answer is the build object with "cached"/"coalesced" set
			 * (older drafts of the API wrapped it as {"build": ...}). */
			const b = r.data && (r.data.build || r.data);
			if ((r.status === 200 || r.status === 202) && b && typeof b.id === 'string') {
				const notice = r.data.cached || b.cached ? 'cached' : r.data.coalesced || b.coalesced ? 'coalesced' : '';
				if (notice) sessionStorage.setItem(`kiln.notice.${b.id}`, notice);
				location.hash = `#/builds/${encodeURIComponent(b.id)}`;
				return;
			}
			if (r.status === 422 || r.status === 400) {
				showServerError(r.error);
			} else if ((r.status === 413 || r.status === 415) && file) {
				showFieldError(context, r.error);
			} else {
				showGeneral(`The build was not submitted: ${r.error}`);
			}
		});

		mount('New build', form);
		fill(loadDraft());
	}

	/* ---- build page ------------------------------------------------------- */

	function viewBuild(id) {
		let alive = true;
		let build = null;
		let es = null;
		let pollTimer = null;
		let lastSeq = 0;
		let follow = sessionStorage.getItem(FOLLOW_KEY) !== 'off';

		const title = h('span', null, `Build ${id.slice(0, 8)}`);
		const statusLine = h('p', { class: 'status-line', role: 'status', 'aria-live': 'polite' });
		const notice = h('div', { class: 'notices' });
		const progressLabel = h('span', { id: 'progress-label' });
		const progress = h('progress', { id: 'progress', max: '1', value: '0', 'aria-labelledby': 'progress-label' });
		const progressBox = h('div', { class: 'progress' }, progressLabel, progress);
		const errorBox = h('div', { class: 'build-error', role: 'alert' });
		const cancelBtn = h('button', { type: 'button', class: 'danger', id: 'cancel', hidden: true }, 'Cancel build');
		const details = h('dl', { class: 'details' });
		const artifacts = h('section', { class: 'card', 'aria-labelledby': 'art-h', hidden: true },
			h('h2', { id: 'art-h' }, 'Artifacts'), h('div', { class: 'art-body' }));
		const followBox = h('input', { type: 'checkbox', id: 'follow', checked: follow });
		const streamState = h('span', { class: 'stream-state', 'aria-live': 'polite' });
		const log = h('div', { id: 'log', class: 'log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Build log', tabindex: '0' });
		const searchIn = h('input', { type: 'search', id: 'log-search', placeholder: 'Search the log', 'aria-label': 'Search the log', autocomplete: 'off' });
		const searchInfo = h('span', { class: 'search-info', id: 'search-info', 'aria-live': 'polite' });
		const rawLog = h('a', { id: 'raw-log', class: 'button', href: `${buildPath(id)}/logs`, download: `${id}.log` }, 'Raw log');
		/* The recipe as submitted (GET .../recipe), loaded when opened; "Edit
		 * and rebuild" hands it to the editor as its draft. */
		const recipePre = h('pre', { id: 'recipe', class: 'recipe' }, 'Loading…');
		const rebuildBtn = h('button', { type: 'button', id: 'rebuild', class: 'primary', disabled: true }, 'Edit and rebuild');
		const recipeBox = h('details', { class: 'card', id: 'recipe-box' }, h('summary', null, 'Recipe'), recipePre, h('div', { class: 'actions' }, rebuildBtn));
		let recipeObj = null;
		recipeBox.addEventListener('toggle', async () => {
			if (!recipeBox.open || recipeObj) return;
			const r = await api('GET', `${buildPath(id)}/recipe`);
			if (!alive || r.handled) return;
			if (r.status !== 200 || !r.data || typeof r.data !== 'object') {
				recipePre.textContent = `Could not load the recipe: ${r.error}`;
				return;
			}
			recipeObj = r.data;
			recipePre.textContent = JSON.stringify(recipeObj, null, 2);
			rebuildBtn.disabled = false;
		});
		rebuildBtn.addEventListener('click', () => {
			if (!recipeObj) return;
			sessionStorage.setItem(DRAFT_KEY, JSON.stringify(recipeObj));
			location.hash = '#/new';
		});

		followBox.addEventListener('change', () => {
			follow = followBox.checked;
			sessionStorage.setItem(FOLLOW_KEY, follow ? 'on' : 'off');
			if (follow) log.scrollTop = log.scrollHeight;
		});
		let autoScrolling = false;
		log.addEventListener('scroll', () => {
			if (autoScrolling) { autoScrolling = false; return; }
			const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 24;
			if (atBottom !== follow) {
				follow = atBottom;
				followBox.checked = follow;
				sessionStorage.setItem(FOLLOW_KEY, follow ? 'on' : 'off');
			}
		});

		cancelBtn.addEventListener('click', async () => {
			cancelBtn.disabled = true;
			const r = await api('POST', `${buildPath(id)}/cancel`);
			cancelBtn.disabled = false;
			if (r.handled) return;
			if (r.status === 409) flash('The build had already finished.', 'info');
			else if (!r.res || !r.res.ok) flash(`Cancel failed: ${r.error}`, 'error');
			else flash('Cancel requested.');
			const b = r.data && (r.data.build || (r.data.id && r.data));
			if (!b) { refresh(); return; }
			update(b);
			schedulePoll(); /* polls until the final status, should the stream have ended */
		});

		mount(title,
			statusLine, notice, errorBox,
			h('div', { class: 'toolbar' }, progressBox, cancelBtn),
			h('section', { class: 'card', 'aria-labelledby': 'log-h' },
				h('div', { class: 'log-head' },
					h('h2', { id: 'log-h' }, 'Log'),
					streamState,
					searchIn, searchInfo,
					h('label', { class: 'check', for: 'follow' }, followBox, ' Follow the log'),
					rawLog),
				log),
			artifacts,
			recipeBox,
			h('details', { class: 'card' }, h('summary', null, 'Details'), details),
			h('p', null, h('a', { href: '#/builds' }, '← All builds')));

		state.cleanups.push(() => {
			alive = false;
			clearTimeout(pollTimer);
			if (es) es.close();
		});

		/* The log view (the GitHub Actions log is the model): a line per
		 * element with its number (CSS, not copied), a collapsible group per
		 * phase ("==> [i/n] ..." starts one; its summary gets the step's
		 * time when the log says it), search. Lines arrive in bursts (a
		 * finished build's whole log at once): they are appended in chunks,
		 * a frame at a time, never one DOM operation per line. */
		const CHUNK = 10000;
		let pending = [];
		let scheduled = false;
		let lineNo = 0;
		let group = null;     /* the current group's body, or null before the first */
		let groupHead = null; /* its summary's time slot */
		/* Lines go into blocks of BLOCK lines that the browser lays out
		 * only when on screen (content-visibility: auto, style.css): a
		 * 50,000-line log costs the layout of what is visible. */
		const BLOCK = 200;
		let block = null;
		let blockLines = 0;
		function addLine(text) {
			pending.push(text);
			if (!scheduled) {
				scheduled = true;
				requestAnimationFrame(flushLines);
			}
		}
		function addLines(texts) {
			for (const t of texts) pending.push(t);
			if (!scheduled) {
				scheduled = true;
				requestAnimationFrame(flushLines);
			}
		}
		function lineEl(t) {
			const el = document.createElement('div');
			el.className = 'l';
			el.dataset.n = String(++lineNo);
			el.textContent = `${t}\n`;
			return el;
		}
		function flushLines() {
			scheduled = false;
			if (!pending.length) return;
			const batch = pending.length > CHUNK ? pending.splice(0, CHUNK) : pending;
			if (batch === pending) pending = [];
			const frag = document.createDocumentFragment();
			let body = group;
			for (const t of batch) {
				if (/^==> \[\d+\/\d+\]/.test(t)) {
					const d = document.createElement('details');
					d.className = 'group';
					d.open = true;
					const sum = document.createElement('summary');
					const l = lineEl(t);
					l.classList.add('head');
					groupHead = document.createElement('span');
					groupHead.className = 'dur';
					sum.append(l, groupHead);
					d.appendChild(sum);
					frag.appendChild(d);
					body = group = d;
					block = null;
					continue;
				}
				const el = lineEl(t);
				const m = /^ {4}step \d+: (?:ok|failed after) \(?([\d.]+ s)\)?/.exec(t);
				if (m && groupHead) groupHead.textContent = m[1];
				if (/^ {4}step \d+: failed/.test(t) && group) group.classList.add('failed');
				/* into the open group (in this fragment or already on the page) */
				if (!block || blockLines >= BLOCK) {
					block = document.createElement('div');
					block.className = 'block';
					blockLines = 0;
					(body || frag).appendChild(block);
				}
				block.appendChild(el);
				blockLines++;
			}
			log.appendChild(frag);
			if (follow) {
				autoScrolling = true;
				log.scrollTop = log.scrollHeight;
			}
			if (pending.length) {
				scheduled = true;
				requestAnimationFrame(flushLines);
			} else if (searchIn.value) {
				runSearch();
			}
		}

		/* Search: every line holding the text is marked, groups holding one
		 * open, the first scrolls into view; Enter goes to the next. */
		let hits = [];
		let hitAt = -1;
		function runSearch() {
			for (const el of hits) el.classList.remove('hit', 'current');
			hits = [];
			hitAt = -1;
			const q = searchIn.value;
			if (!q) { searchInfo.textContent = ''; return; }
			const needle = q.toLowerCase();
			for (const el of log.querySelectorAll('div.l'))
				if (el.textContent.toLowerCase().includes(needle)) hits.push(el);
			for (const el of hits) {
				el.classList.add('hit');
				const d = el.closest('details');
				if (d) d.open = true;
			}
			searchInfo.textContent = hits.length === 1 ? '1 match' : `${hits.length} matches`;
			nextHit();
		}
		function nextHit() {
			if (!hits.length) return;
			if (hitAt >= 0) hits[hitAt].classList.remove('current');
			hitAt = (hitAt + 1) % hits.length;
			hits[hitAt].classList.add('current');
			follow = false;
			followBox.checked = false;
			hits[hitAt].scrollIntoView({ block: 'center' });
		}
		let searchTimer = null;
		searchIn.addEventListener('input', () => { clearTimeout(searchTimer); searchTimer = setTimeout(runSearch, 200); });
		searchIn.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); if (hits.length) nextHit(); else runSearch(); } });

		function noticeFor(b) {
			const n = sessionStorage.getItem(`kiln.notice.${id}`) || (b && b.cached ? 'cached' : '');
			clear(notice);
			if (n === 'cached')
				notice.appendChild(h('p', { class: 'notice', id: 'notice' }, 'Answered from the cache: an identical build had already completed, so no new work was done. The artifacts below are that build\'s.'));
			else if (n === 'coalesced')
				notice.appendChild(h('p', { class: 'notice', id: 'notice' }, 'An identical build was already queued or running, so this page follows that build instead of starting a second one.'));
			if (b && b.warning)
				notice.appendChild(h('p', { class: 'notice warn' }, 'This build reported a warning (for example it ran past its warning time, or an image file embeds the build date); see the log.'));
		}

		function update(b) {
			if (!b || !alive) return;
			/* A finished build stays finished. Answers race: the cancel's
			 * (still `building`, the worker has not stopped yet) or a poll's
			 * can arrive after the log stream's final status; applied, they
			 * would show a cancelled build as running again, with its cancel
			 * button, and nothing left to correct it. */
			if (build && TERMINAL.has(String(build.status)) && !TERMINAL.has(String(b.status))) return;
			build = b;
			title.textContent = b.name ? String(b.name) : `Build ${id.slice(0, 8)}`;
			document.title = `${title.textContent} — kiln`;
			const st = String(b.status);
			clear(statusLine).append(
				'Status: ', statusBadge(st),
				st === 'pending' ? ' — waiting for a worker' : '');
			const p = b.progress || {};
			const total = Number(p.total_steps) || 0;
			const cur = Number(p.current_step) || 0;
			if (st === 'completed') {
				progress.max = 1; progress.value = 1;
				progressLabel.textContent = total ? `Step ${total} of ${total} — done` : 'Done';
			} else if (total > 0) {
				progress.max = total; progress.value = Math.min(cur, total);
				/* the phase's own words, without its "step i of n: " (said once) */
				const what = p.current ? String(p.current).replace(/^step \d+ of \d+: /, '') : '';
				progressLabel.textContent = `Step ${cur} of ${total}${what ? ` — ${what}` : ''}`;
			} else {
				progress.removeAttribute('value'); /* indeterminate */
				progressLabel.textContent = st === 'pending' ? 'Queued' : (TERMINAL.has(st) ? 'Finished' : 'Starting');
				if (TERMINAL.has(st)) { progress.max = 1; progress.value = 0; }
			}
			progressBox.classList.toggle('failed', st === 'failed');
			cancelBtn.hidden = TERMINAL.has(st);
			clear(errorBox);
			if (st === 'cancelled')
				errorBox.appendChild(h('p', { class: 'error' }, b.error && b.error !== 'cancelled' ? `The build was cancelled: ${b.error}` : 'The build was cancelled.'));
			/* The reason, then the last lines of the step's output (one line
			 * each, as the CLI shows them). */
			else if (b.error) errorBox.appendChild(h('pre', { class: 'error', id: 'build-error' }, `Failed: ${b.error}`));
			noticeFor(b);
			renderDetails(b);
			renderArtifacts(b);
		}

		function renderDetails(b) {
			const rows = [
				['Build ID', h('code', null, String(b.id))],
				['Created', fmtTime(b.created_at)],
				['Started', fmtTime(b.started_at) || '—'],
				['Completed', fmtTime(b.completed_at) || '—'],
				['Config hash', h('code', { class: 'hash' }, String(b.config_hash || ''))],
				['Build key', h('code', { class: 'hash' }, String(b.build_key || ''))],
				['SOURCE_DATE_EPOCH', String(b.source_date_epoch ?? '')],
			];
			clear(details);
			for (const [k, v] of rows) append(details, [h('dt', null, k), h('dd', null, v)]);
		}

		function renderArtifacts(b) {
			const body = artifacts.querySelector('.art-body');
			const list = Array.isArray(b.artifacts) ? b.artifacts : [];
			artifacts.hidden = !(b.status === 'completed' || list.length);
			clear(body);
			if (!list.length) {
				body.appendChild(h('p', null, b.status === 'completed' ? 'This build produced no artifacts.' : ''));
				return;
			}
			body.appendChild(h('table', { class: 'artifacts' },
				h('thead', null, h('tr', null, ['Name', 'Size', 'SHA-256', 'Download'].map((t) => h('th', { scope: 'col' }, t)))),
				h('tbody', null, list.map((a) => {
					const name = String(a.name);
					const href = `${buildPath(id)}/artifacts/${encodeURIComponent(name)}`;
					return h('tr', { 'data-artifact': name },
						h('td', { 'data-label': 'Name' }, h('code', null, name)),
						h('td', { 'data-label': 'Size' }, fmtSize(a.size)),
						h('td', { 'data-label': 'SHA-256' }, h('code', { class: 'hash sha256' }, String(a.sha256))),
						h('td', { 'data-label': 'Download' }, h('a', { href, download: name, class: 'button' }, 'Download ', h('span', { class: 'visually-hidden' }, name))));
				}))));
		}

		async function refresh() {
			const r = await api('GET', buildPath(id));
			if (!alive || r.handled) return;
			if (r.status === 200 && r.data) {
				update(r.data.build || r.data);
			} else if (r.status === 404) {
				clear($main());
				mount('Build not found', h('p', null, 'There is no build with this ID, or it belongs to someone else. ', h('a', { href: '#/builds' }, 'All builds')));
				alive = false;
				if (es) es.close();
				return;
			} else {
				flash(`Could not refresh the build: ${r.error}`, 'error');
			}
			schedulePoll();
		}

		function schedulePoll() {
			clearTimeout(pollTimer);
			if (alive && (!build || !TERMINAL.has(build.status))) pollTimer = setTimeout(refresh, 1500);
		}

		function openStream() {
			/* EventSource reconnects by itself after a network error and sends
			 * Last-Event-ID, so the log resumes where it stopped; lines are also
			 * de-duplicated by their sequence number. */
			es = new EventSource(`${buildPath(id)}/logs`);
			es.addEventListener('open', () => { streamState.textContent = 'live'; streamState.className = 'stream-state live'; });
			es.addEventListener('log', (e) => {
				const seq = Number(e.lastEventId);
				if (seq && seq <= lastSeq) return;
				if (seq) lastSeq = seq;
				addLine(e.data);
				/* a step began: fetch the progress now rather than at the next poll */
				if (/^==> \[\d+\/\d+\]/.test(e.data)) {
					clearTimeout(pollTimer);
					pollTimer = setTimeout(refresh, 200);
				}
			});
			es.addEventListener('status', (e) => {
				es.close();
				streamState.textContent = 'ended';
				streamState.className = 'stream-state';
				try { update(JSON.parse(e.data)); } catch (err) { refresh(); }
				clearTimeout(pollTimer);
			});
			es.addEventListener('error', () => {
				if (!alive) return;
				if (es.readyState === EventSource.CLOSED) {
					streamState.textContent = 'not available';
					streamState.className = 'stream-state';
					loadTextLog();
				} else {
					streamState.textContent = 'reconnecting…';
					streamState.className = 'stream-state';
				}
			});
		}

		/* Without a stream (error answer): the plain-text log, once. */
		async function loadTextLog() {
			const r = await fetch(`${buildPath(id)}/logs`, { credentials: 'same-origin', headers: { Accept: 'text/plain' } }).catch(() => null);
			if (!r || !r.ok || !alive) return;
			const text = await r.text();
			clear(log);
			lineNo = 0;
			group = groupHead = block = null;
			pending = [];
			const lines = text.split('\n');
			if (lines.length && lines[lines.length - 1] === '') lines.pop();
			addLines(lines);
		}

		/* A finished build's log is fetched whole (one request, far faster
		 * than replaying it event by event); a live one is streamed. */
		async function openLog() {
			const r = await api('GET', buildPath(id));
			if (!alive || r.handled) return;
			const b = r.status === 200 && r.data ? (r.data.build || r.data) : null;
			if (b && TERMINAL.has(String(b.status))) {
				streamState.textContent = 'ended';
				await loadTextLog();
				return;
			}
			openStream();
		}

		noticeFor(null);
		refresh();
		openLog();
	}

	/* ---- start ------------------------------------------------------------ */

	async function start() {
		document.getElementById('signout').addEventListener('click', signOut);
		window.addEventListener('hashchange', () => {
			if (location.hash === '#/signin' && state.session) { location.hash = '#/builds'; return; }
			route();
		});
		const ok = await loadSession();
		const loading = document.getElementById('loading');
		if (loading) loading.remove();
		if (ok) route();
		else showSignIn();
	}

	if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
	else start();
})();
