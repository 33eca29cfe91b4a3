// gatehouse browser client. Served as /static/app.js (loaded with defer).
// No globals except window.gatehouse.
'use strict';

(() => {
  const REASON_KEY = 'gatehouse.signedOutReason';

  // sessionStorage can throw (disabled storage, some private modes).
  const storage = {
    get(key) { try { return window.sessionStorage.getItem(key); } catch { return null; } },
    set(key, value) { try { window.sessionStorage.setItem(key, value); } catch { /* ignore */ } },
    remove(key) { try { window.sessionStorage.removeItem(key); } catch { /* ignore */ } },
  };

  const capitalise = (s) => s.charAt(0).toUpperCase() + s.slice(1);

  // Signed-out view: explain why we landed here, once.
  {
    const reason = storage.get(REASON_KEY);
    if (reason !== null) {
      storage.remove(REASON_KEY);
      const el = document.getElementById('signed-out-reason');
      if (el && reason) {
        el.hidden = false;
        el.textContent = capitalise(reason) + '.';
      }
    }
  }

  const app = document.getElementById('app');
  let currentState = app ? 'connecting' : 'closed';
  window.gatehouse = Object.freeze({ state: () => currentState });
  if (!app) return;

  // ---- Close-code contract -------------------------------------------------
  const BACKOFF_START_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  const STABLE_AFTER_MS = 10000;
  const REDIRECT_DELAY_MS = 1500;
  const MAX_LOG_ENTRIES = 500;

  const SESSION_ENDED = 4401;
  const RETRY_CODES = new Set([1001, 1011, 1013]);
  const FATAL_CODES = new Set([1003, 1007, 1008, 1009]);

  const FRIENDLY_REASONS = {
    logout: 'you signed out in another tab or device',
    revoked: 'an administrator revoked this session',
    user_disabled: 'this account was disabled',
    password_changed: 'the password was changed',
    session_limit: 'you signed in on too many devices, and this was the oldest session',
    expired: 'the session expired',
  };

  const CODE_TEXT = {
    1000: 'normal closure',
    1001: 'server going away',
    1003: 'binary messages not accepted',
    1005: 'no status code',
    1006: 'connection lost',
    1007: 'invalid UTF-8',
    1008: 'policy violation',
    1009: 'message too big',
    1011: 'internal server error',
    1013: 'try again later',
  };

  // ---- Elements --------------------------------------------------------------
  const stateEl = document.getElementById('conn-state');
  const detailEl = document.getElementById('conn-detail');
  const logEl = document.getElementById('log');
  const sendForm = document.getElementById('send-form');
  const input = document.getElementById('message');
  const sendBtn = sendForm ? sendForm.querySelector('button[type="submit"]') : null;
  const logoutForm = document.getElementById('logout');

  // ---- Rendering ---------------------------------------------------------------
  const MARKS = { out: '→', in: '←', sys: '•' };
  const SR_LABELS = { out: 'Sent: ', in: 'Received: ', sys: 'Status: ' };
  const pad2 = (n) => String(n).padStart(2, '0');
  const hhmmss = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;

  function addLog(kind, text, when) {
    if (!logEl) return;
    const nearBottom = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 48;
    const now = when instanceof Date && !isNaN(when) ? when : new Date();

    const li = document.createElement('li');
    li.className = `entry ${kind}`;

    const time = document.createElement('time');
    time.dateTime = now.toISOString();
    time.textContent = hhmmss(now);

    const dir = document.createElement('span');
    dir.className = 'dir';
    dir.setAttribute('aria-hidden', 'true');
    dir.textContent = MARKS[kind];

    const label = document.createElement('span');
    label.className = 'sr-only';
    label.textContent = SR_LABELS[kind];

    const body = document.createElement('span');
    body.className = 'text';
    body.textContent = String(text);

    li.append(time, dir, label, body);
    logEl.append(li);
    while (logEl.children.length > MAX_LOG_ENTRIES) logEl.firstElementChild.remove();
    if (nearBottom) logEl.scrollTop = logEl.scrollHeight;
  }

  let refocusInput = false;
  function setComposerEnabled(enabled) {
    if (!input || !sendBtn) return;
    if (enabled) {
      input.disabled = false;
      sendBtn.disabled = false;
      const active = document.activeElement;
      if (refocusInput && (!active || active === document.body)) input.focus();
      refocusInput = false;
    } else {
      if (document.activeElement === input || document.activeElement === sendBtn) refocusInput = true;
      input.disabled = true;
      sendBtn.disabled = true;
    }
  }

  // The badge holds the state word only; why (a close code, the retry delay) goes
  // beside it, where it can wrap on a narrow screen.
  function setState(state, detail) {
    currentState = state;
    if (stateEl) {
      stateEl.dataset.state = state;
      stateEl.textContent = state;
    }
    if (detailEl) detailEl.textContent = detail || '';
    setComposerEnabled(state === 'open');
  }

  function closeDescription(code, reason) {
    const why = reason || CODE_TEXT[code] || '';
    return why ? `${code}: ${why}` : String(code);
  }

  // ---- Chat rooms ----------------------------------------------------------------
  // On a chat page (data-kind="chat") frames are JSON: the members list, who joins and
  // leaves, messages with who and when, and errors about what we sent.
  const isChat = app.dataset.kind === 'chat';
  const membersEl = document.getElementById('members');
  const members = new Map(); // user id -> username

  function renderMembers() {
    if (!membersEl) return;
    const items = [...members.entries()].sort((a, b) => a[0] - b[0]).map(([id, name]) => {
      const li = document.createElement('li');
      li.dataset.userId = String(id);
      li.textContent = name;
      return li;
    });
    membersEl.replaceChildren(...items);
  }

  function chatFrame(data) {
    let f;
    try { f = JSON.parse(data); } catch { addLog('in', data); return; }
    switch (f && f.type) {
      case 'chat.members':
        members.clear();
        for (const u of f.users || []) members.set(u.id, u.username);
        renderMembers();
        break;
      case 'chat.join':
        members.set(f.user.id, f.user.username);
        renderMembers();
        addLog('sys', `${f.user.username} joined.`);
        break;
      case 'chat.leave':
        members.delete(f.user.id);
        renderMembers();
        addLog('sys', `${f.user.username} left.`);
        break;
      case 'chat.message': {
        const mine = String(f.user.id) === app.dataset.userId;
        addLog(mine ? 'out' : 'in', `${f.user.username}: ${f.message}`, f.sent_at ? new Date(f.sent_at) : undefined);
        break;
      }
      case 'error':
        addLog('sys', `Not sent: ${f.error}`);
        break;
      default:
        addLog('in', data); // a push from a service, shown as it came
    }
  }

  // ---- Connection --------------------------------------------------------------
  const socketPath = app.dataset.socket || '';
  if (!/^\/ws\/[A-Za-z0-9._\/-]+\/$/.test(socketPath)) {
    setState('closed', 'no socket for this page');
    return;
  }
  const wsURL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + socketPath;

  let ws = null;
  let attempt = 0;
  let retryTimer = 0;
  let stableTimer = 0;
  let everConnected = false;
  let stopped = false;     // terminal: never reconnect again
  let loggingOut = false;  // user submitted the logout form

  const mayReconnect = () => !stopped && !loggingOut;

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    if (!mayReconnect()) return;
    setState('connecting');

    let sock;
    try {
      sock = new WebSocket(wsURL);
    } catch (err) {
      addLog('sys', `Could not open connection: ${err && err.message ? err.message : err}`);
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.binaryType = 'arraybuffer';
    let wasOpen = false;

    sock.addEventListener('open', () => {
      if (sock !== ws) return;
      wasOpen = true;
      setState('open');
      addLog('sys', everConnected ? 'Reconnected.' : 'Connected.');
      everConnected = true;
      clearTimeout(stableTimer);
      stableTimer = setTimeout(() => { attempt = 0; }, STABLE_AFTER_MS);
    });

    sock.addEventListener('message', (ev) => {
      if (sock !== ws) return;
      if (typeof ev.data !== 'string') addLog('sys', `Ignored a binary message (${ev.data.byteLength} bytes).`);
      else if (isChat) chatFrame(ev.data);
      else addLog('in', ev.data);
    });

    sock.addEventListener('close', (ev) => {
      if (sock !== ws) return;
      ws = null;
      clearTimeout(stableTimer);
      handleClose(ev.code, ev.reason || '', wasOpen);
    });
  }

  function scheduleReconnect() {
    if (!mayReconnect()) return;
    // Exponential backoff with jitter: delay in [0.75, 1] x min(cap, 500ms * 2^attempt).
    const base = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** attempt);
    const delay = Math.round(base * (0.75 + Math.random() * 0.25));
    attempt = Math.min(attempt + 1, 16);
    setState('reconnecting', `in ${Math.max(1, Math.ceil(delay / 1000))}s`);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  function endSession(friendly, detail) {
    stopped = true;
    clearTimeout(retryTimer);
    setState('closed', detail);
    addLog('sys', `Session ended: ${friendly}`);
    storage.set(REASON_KEY, friendly);
    addLog('sys', 'Returning to the sign-in page…');
    setTimeout(() => location.replace('/'), REDIRECT_DELAY_MS);
  }

  async function signedOutOnServer() {
    try {
      const res = await fetch('/api/session', { credentials: 'same-origin', cache: 'no-store' });
      return res.status === 401;
    } catch {
      return false; // network trouble: treat as transient
    }
  }

  function handleClose(code, reason, wasOpen) {
    const desc = closeDescription(code, reason);

    if (!mayReconnect()) {
      setState('closed', desc);
      return;
    }

    if (code === SESSION_ENDED) {
      const friendly = Object.prototype.hasOwnProperty.call(FRIENDLY_REASONS, reason)
        ? FRIENDLY_REASONS[reason] : 'the session ended';
      endSession(friendly, `${code}: session ended — ${reason || 'unknown'}`);
      return;
    }

    if (code >= 4000 && code <= 4999) { // closed by the application or an operator
      stopped = true;
      setState('closed', desc);
      addLog('sys', `Closed by the server (${desc}). Not reconnecting; reload the page to try again.`);
      return;
    }

    if (FATAL_CODES.has(code)) {
      stopped = true;
      setState('closed', desc);
      addLog('sys', `Connection closed (${desc}). Not reconnecting; reload the page to try again.`);
      return;
    }

    if (RETRY_CODES.has(code)) {
      if (wasOpen) addLog('sys', `Disconnected (${desc}).`);
      scheduleReconnect();
      return;
    }

    // 1006 or anything else (a refused handshake looks like this): ask the server
    // whether the session is still valid before retrying.
    setState('closed', desc);
    signedOutOnServer().then((signedOut) => {
      if (!mayReconnect()) return;
      if (signedOut) {
        endSession('you are signed out', `${code}: session ended — signed out`);
        return;
      }
      if (wasOpen) addLog('sys', `Disconnected (${desc}).`);
      scheduleReconnect();
    });
  }

  // ---- Forms -------------------------------------------------------------------
  if (sendForm && input) {
    sendForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const text = input.value;
      if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
      try {
        ws.send(isChat ? JSON.stringify({ message: text }) : text);
      } catch (err) {
        addLog('sys', `Send failed: ${err && err.message ? err.message : err}`);
        return;
      }
      if (!isChat) addLog('out', text); // a chat message shows when the room sends it back
      input.value = '';
      input.focus();
    });
  }

  if (logoutForm) {
    logoutForm.addEventListener('submit', () => {
      loggingOut = true;
      clearTimeout(retryTimer);
      storage.remove(REASON_KEY);
      if (ws && ws.readyState <= WebSocket.OPEN) {
        try { ws.close(1000, 'logout'); } catch { /* ignore */ }
      }
    });
  }

  // Back online while waiting to retry: try now instead of waiting out the backoff.
  window.addEventListener('online', () => {
    if (currentState === 'reconnecting' && mayReconnect()) connect();
  });

  connect();
})();
