// The learner's browser as a measured client of a lab server (anywidget front end; no build step).
//
// The kernel sends a plan (pattern, ports, routes). For each route ("direct": http://127.0.0.1:port,
// "proxy": <base_url>proxy/<port>/ through jupyter-server-proxy) this code
//   1. aligns clocks: a few GET /clock round trips (the kernel does the arithmetic, see clock.py);
//   2. opens the real browser API the pattern names (fetch polling, a long-poll loop, a streamed
//      fetch body, EventSource, WebSocket) and says "ready";
//   3. on "go", records every request, event and frame with performance.now() and sends them to
//      the kernel in small batches; after the run it stops everything and says "done". For the
//      latency claims it also times a fetch round trip on its route a few times a second.
// The kernel turns the log into a Result and sends back a report that this view shows.

const CLOCK_EXCHANGES = 8;
const READY_TIMEOUT_MS = 10000;
const FLUSH_MS = 200;
const TRIP_EVERY_MS = 250;
const TRIP_PATTERNS = ["sse", "ws", "longpoll"];  // whose latency claims are bounded by a round trip

function baseUrl() {
  const config = document.getElementById("jupyter-config-data");
  try {
    return config ? JSON.parse(config.textContent).baseUrl || "/" : "/";
  } catch (e) {
    return "/";
  }
}

function httpOrigin(route, port) {
  if (route === "direct") return `http://127.0.0.1:${port}`;
  return `${location.origin}${baseUrl()}proxy/${port}`;
}

function wsOrigin(route, port) {
  return httpOrigin(route, port).replace(/^http/, "ws");
}

const now = () => performance.now() / 1000;

export class RouteClient {  // exported for the browser tests; the widget uses render
  constructor(route, plan, send) {
    this.route = route;
    this.plan = plan;
    this.send = send;
    this.requests = [];   // [sent, answered, status, new_events, tag]
    this.seen = [];       // [seq, time]
    this.errors = [];
    this.trips = [];      // fetch round trips on this route during the run (s)
    this.notes = {};      // anything else the pattern wants to report
    this.stopped = false;
    this.closers = [];
    this.readySent = false;
    this.started = new Promise((ok) => { this.go = ok; });  // resolved when the feed starts
  }

  url(path, port) {
    return httpOrigin(this.route, port ?? this.plan.meter_port) + path;
  }

  ready() {
    if (!this.readySent) {
      this.readySent = true;
      this.send({ kind: "ready", route: this.route });
    }
  }

  flush(final = false) {
    const batch = { kind: final ? "done" : "log", route: this.route, requests: this.requests,
                    seen: this.seen, errors: this.errors, trips: this.trips, notes: this.notes };
    this.requests = [];
    this.seen = [];
    this.errors = [];
    this.trips = [];
    this.send(batch);
  }

  async alignClock() {
    const samples = [];
    for (let i = 0; i < CLOCK_EXCHANGES; i++) {
      const t0 = now();
      const answer = await fetch(this.url("/clock", this.plan.server_port), { cache: "no-store" });
      const ts = (await answer.json()).t;
      samples.push([t0, ts, now()]);
    }
    this.send({ kind: "clock", route: this.route, samples });
  }

  // A fetch round trip on this route while the run's traffic flows, under the same load on the
  // proxy as the events (the clock exchanges above come before the run, when it is quieter).
  async measureTrips() {
    await this.started;
    while (!this.stopped) {
      const t0 = now();
      try {
        await (await fetch(this.url("/clock", this.plan.server_port), { cache: "no-store" })).json();
      } catch (e) {
        return;  // the run is over or the route is gone: the clock exchanges stand in
      }
      if (!this.stopped) this.trips.push(now() - t0);
      await new Promise((ok) => setTimeout(ok, TRIP_EVERY_MS));
    }
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    for (const close of this.closers) {
      try { close(); } catch (e) { /* already closed */ }
    }
  }

  // -- the patterns -----------------------------------------------------------------------

  poll() {
    let held = 0;
    const once = async () => {
      const sent = now();
      try {
        const answer = await fetch(this.url("/latest"), { cache: this.plan.cache || "default" });
        const event = await answer.json();
        const answered = now();
        let fresh = 0;
        if (answer.status === 200 && event.seq > held) {
          held = event.seq;
          fresh = 1;
          this.seen.push([event.seq, answered]);
        }
        this.requests.push([sent, answered, answer.status, fresh]);
        this.ready();
      } catch (error) {
        this.errors.push(`poll failed: ${error}`);
      }
    };
    once();
    const timer = setInterval(once, this.plan.interval_ms);
    this.closers.push(() => clearInterval(timer));
  }

  async longPoll() {
    const abort = new AbortController();
    this.closers.push(() => abort.abort());
    let cursor = 0;
    let stream = "";
    let failures = 0;
    this.ready();  // the first request is held until news: the server holds it, so it is in place
    while (!this.stopped) {
      const sent = now();
      try {
        const from = stream ? `&stream=${encodeURIComponent(stream)}` : "";
        const answer = await fetch(this.url(`/events?after=${cursor}${from}`), { signal: abort.signal, cache: "no-store" });
        if (!answer.ok) throw new Error(`HTTP ${answer.status}`);  // fetch resolves on any status
        const body = await answer.json();
        const answered = now();
        failures = 0;
        if (body.reset) cursor = 0;  // the server restarted: its events begin again at 1
        stream = body.stream || "";
        for (const event of body.events || []) {
          this.seen.push([event.seq, answered]);
          cursor = event.seq;
        }
        this.requests.push([sent, answered, answer.status, (body.events || []).length]);
      } catch (error) {
        if (this.stopped) return;
        this.errors.push(`long poll failed: ${error}`);
        failures += 1;
        await new Promise((ok) => setTimeout(ok, Math.min(50 * 2 ** (failures - 1), 2000)));  // doubling, as the Python client
      }
    }
  }

  async stream() {
    const abort = new AbortController();
    this.closers.push(() => abort.abort());
    const sent = now();
    let events = 0;
    let status = 0;
    // The answer's headers may be held back too (a buffering proxy): say "ready" once it is asked.
    setTimeout(() => this.ready(), 0);
    try {
      const answer = await fetch(this.url("/stream"), { signal: abort.signal, cache: "no-store" });
      status = answer.status;
      const reader = answer.body.getReader();
      const decoder = new TextDecoder();
      let text = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const at = now();
        text += decoder.decode(value, { stream: true });
        const lines = text.split("\n");
        text = lines.pop();
        for (const line of lines.filter((l) => l.trim())) {
          this.seen.push([JSON.parse(line).seq, at]);
          events += 1;
        }
      }
    } catch (error) {
      if (!this.stopped) this.errors.push(`stream failed: ${error}`);
    }
    this.requests.push([sent, now(), status, events]);
  }

  eventSource() {
    const source = new EventSource(this.url("/events"));
    this.closers.push(() => source.close());
    this.notes.opens = 0;
    source.onopen = () => {
      this.notes.opens += 1;
      this.requests.push([now(), now(), 200, 0]);
      this.ready();
    };
    source.onmessage = (e) => {
      this.seen.push([JSON.parse(e.data).seq, now()]);
    };
    source.onerror = () => {
      this.errors.push(`EventSource error, readyState ${source.readyState}`);
    };
    if (this.plan.refuse) {
      // A second EventSource to an address that answers 503: the standard says it must give up
      // for good (no reconnection); the server counts how often it was asked.
      const refused = new EventSource(this.url(`/refuse?route=${this.route}`));
      this.closers.push(() => { this.notes.refused_state = refused.readyState; refused.close(); });
    }
  }

  webSocket() {
    const socket = new WebSocket(wsOrigin(this.route, this.plan.meter_port) + "/feed");
    this.closers.push(() => socket.close());
    const opened = now();
    socket.onopen = () => {
      this.requests.push([opened, now(), 101, 0]);
      this.ready();
    };
    socket.onmessage = (e) => {
      this.seen.push([JSON.parse(e.data).seq, now()]);
    };
    socket.onclose = (e) => {
      if (!this.stopped) this.errors.push(`WebSocket closed (${e.code})`);
    };
  }

  async cors() {
    // Three kinds of poll from this page's origin to the server's own port (another origin):
    // to a route that sends no Access-Control-Allow-Origin, to one that names this page, and to
    // the same with a custom header, which makes the browser send a preflight OPTIONS first.
    const phases = [["closed", "/closed/latest", {}], ["simple", "/latest", {}],
                    ["custom", "/latest", { "X-Client": "course-notebook" }]];
    this.notes.cors = {};
    this.ready();
    await this.started;
    let held = 0;
    for (const [phase, path, headers] of phases) {
      const outcome = { made: 0, read: 0 };
      this.notes.cors[phase] = outcome;
      for (let i = 0; i < 3 && !this.stopped; i++) {
        outcome.made += 1;
        const sent = now();
        try {
          const answer = await fetch(this.url(`${path}?phase=${phase}`), { headers, cache: "no-store" });
          const event = await answer.json();
          outcome.read += 1;
          const fresh = event.seq > held ? 1 : 0;
          if (fresh) {
            held = event.seq;
            this.seen.push([event.seq, now()]);
          }
          this.requests.push([sent, now(), answer.status, fresh]);
        } catch (error) {
          this.errors.push(`${phase} poll: ${error}`);
        }
        await new Promise((ok) => setTimeout(ok, this.plan.interval_ms));
      }
    }
  }

  async connectionLimit() {
    // Seven EventSources to one host:port over HTTP/1.1. A browser opens at most six connections
    // to one host (Chromium's per-group limit), so the seventh, and a fetch after it, must wait
    // until one closes. Then close the first stream, and a second one a moment later.
    const start = now();
    const limit = { opened: [], closed: [], fetch_sent: null, fetch_done: null };
    this.notes.limit = limit;
    const sources = [];
    for (let i = 0; i < 7; i++) {
      const source = new EventSource(this.url("/events"));
      source.onopen = () => { if (limit.opened[i] == null) limit.opened[i] = now() - start; };
      source.onmessage = (e) => this.seen.push([JSON.parse(e.data).seq, now()]);
      sources.push(source);
      this.closers.push(() => source.close());
    }
    this.ready();
    const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));
    await sleep(this.plan.hold_ms);
    limit.fetch_sent = now() - start;
    fetch(this.url("/clock"), { cache: "no-store" })
      .then(() => { limit.fetch_done = now() - start; })
      .catch((error) => this.errors.push(`fetch beside the streams: ${error}`));
    await sleep(this.plan.hold_ms);
    for (const first of sources.slice(0, 2)) {
      first.close();
      limit.closed.push(now() - start);
      await sleep(this.plan.hold_ms / 2);
    }
  }

  chat() {
    // Join the kernel's chat room; say hello by itself (so a run without typing still talks),
    // then send whatever the learner types in the box.
    const name = `browser-${this.route}`;
    const socket = new WebSocket(wsOrigin(this.route, this.plan.meter_port) + `/chat?name=${name}`);
    this.socket = socket;
    this.notes.heard = [];
    this.closers.push(() => socket.close());
    const opened = now();
    socket.onopen = () => {
      this.requests.push([opened, now(), 101, 0]);
      this.ready();
      this.started.then(() => this.say(`hello from your browser (${this.route})`));
    };
    socket.onmessage = (e) => {
      const message = JSON.parse(e.data);
      this.notes.heard.push(message);
      if (this.onHeard) this.onHeard(message);
    };
  }

  say(text) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(text);
  }

  open() {
    const run = { chat: () => this.chat(), limit: () => this.connectionLimit(), cors: () => this.cors(), poll: () => this.poll(), longpoll: () => this.longPoll(), stream: () => this.stream(),
                  sse: () => this.eventSource(), ws: () => this.webSocket() }[this.plan.pattern];
    run();
    if (TRIP_PATTERNS.includes(this.plan.pattern)) this.measureTrips();
    setTimeout(() => {
      if (!this.readySent) this.fail(`not connected within ${READY_TIMEOUT_MS / 1000} s`);
    }, READY_TIMEOUT_MS);
  }

  fail(why) {
    this.stop();
    this.send({ kind: "failed", route: this.route, why });
  }
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "lab-browser";
  root.dataset.state = "starting";
  const status = document.createElement("div");
  status.className = "lab-browser-status";
  const report = document.createElement("div");
  report.className = "lab-browser-report";
  root.append(status, report);
  el.append(root);

  const show = () => {
    status.textContent = model.get("status");
    report.innerHTML = model.get("report");
    root.dataset.state = model.get("state");
  };
  model.on("change:status", show);
  model.on("change:report", show);
  model.on("change:state", show);
  show();

  const plan = model.get("plan");
  if (!plan || !plan.pattern || model.get("state") !== "waiting") return;  // already ran (or a second view)
  const send = (message) => model.send(message);
  let clients = [];

  let chatLog = null;
  if (plan.pattern === "chat") {
    const box = document.createElement("input");
    box.placeholder = "say something to the bots, then press Enter";
    box.className = "lab-browser-chat-input";
    box.style.width = "420px";
    chatLog = document.createElement("div");
    chatLog.className = "lab-browser-chat-log";
    chatLog.style.cssText = "max-height: 9em; overflow-y: auto; font-family: monospace; font-size: 90%;";
    box.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && box.value.trim()) {
        clients.forEach((c) => c.say(box.value.trim()));
        box.value = "";
      }
    });
    root.append(box, chatLog);
  }

  model.on("msg:custom", (message) => {
    if (message.kind === "start") {
      Object.assign(plan, message);
      clients = plan.routes.map((route) => new RouteClient(route, plan, send));
      if (chatLog) {
        clients[0].onHeard = (m) => {
          const line = document.createElement("div");
          line.textContent = `#${m.seq} ${m.from}: ${m.text}`;
          chatLog.append(line);
        };
      }
      for (const client of clients) {
        client.alignClock()
          .then(() => client.open())
          .catch((error) => client.fail(`could not reach ${client.url("/clock", plan.server_port)}: ${error}`));
      }
    } else if (message.kind === "go") {
      clients.forEach((c) => c.go());
      const flusher = setInterval(() => clients.forEach((c) => c.flush()), FLUSH_MS);
      setTimeout(() => {
        clearInterval(flusher);
        clients.forEach((c) => c.stop());
        // Let a stream that is being read finish its last chunk before the final report.
        setTimeout(() => clients.forEach((c) => c.flush(true)), 50);
      }, message.run_ms);
    }
  });
  send({ kind: "hello", origin: location.origin, base_url: baseUrl() });
}

export default { render };
