// fleetledger console: live updates (server-sent events), keyboard, tabs, copy, expand.
// Everything shown comes from server-rendered, escaped fragments: event data is never
// turned into markup here.  No inline script, no eval (the page's CSP forbids both).
(function () {
  "use strict";

  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // ------------------------------------------------------------------ fragments

  async function fragment(url) {
    const res = await fetch(url, { credentials: "same-origin", headers: { "HX-Request": "true" } });
    if (!res.ok) throw new Error(url + ": " + res.status);
    const doc = new DOMParser().parseFromString(await res.text(), "text/html");
    return doc;
  }

  function adopt(node) {
    const copy = document.importNode(node, true);
    return copy;
  }

  function replaceWith(target, source) {
    if (!target || !source) return;
    const fresh = adopt(source);
    target.replaceWith(fresh);
    if (window.htmx) window.htmx.process(fresh);
  }

  // Run fn now, or -- while it runs or within ms of its last start -- once more after:
  // bursts of events cost one or two fetches, and the first one is not delayed.
  function throttle(fn, ms) {
    let running = false;
    let again = false;
    let last = 0;
    let timer = null;
    const run = async () => {
      timer = null;
      running = true;
      last = Date.now();
      try { await fn(); } catch (e) { console.warn(e); }
      running = false;
      if (again) { again = false; schedule(); }
    };
    const schedule = () => {
      if (running) { again = true; return; }
      if (timer) return;
      const wait = Math.max(0, last + ms - Date.now());
      timer = setTimeout(run, wait);
    };
    return schedule;
  }

  // ------------------------------------------------------------------ live

  const live = {
    source: null,
    url: null,
    lastId: null,
    handlers: {},
    received: 0,
    status(text, cls) {
      const el = $("#live");
      const t = $("#live-text");
      if (t) t.textContent = text;
      if (el) el.className = "live " + (cls || "");
    },
    connect(url, handlers) {
      this.disconnect();
      this.url = url;
      this.handlers = handlers;
      let full = url;
      if (this.lastId !== null) full += (url.includes("?") ? "&" : "?") + "from=" + encodeURIComponent(this.lastId);
      const es = new EventSource(full);
      this.source = es;
      es.onopen = () => this.status("live", "on");
      es.onerror = () => {
        if (es.readyState === EventSource.CLOSED) {
          // the browser gave up (an error answer): reconnect ourselves from the last id
          this.status("reconnecting", "off");
          setTimeout(() => { if (this.source === es) this.connect(this.url, this.handlers); }, 1500);
        } else {
          this.status("reconnecting", "off");
        }
      };
      for (const name of ["run_created", "action_created", "run_updated", "run_completed", "run_failed", "intercept_created"]) {
        es.addEventListener(name, (e) => {
          this.lastId = e.lastEventId;
          this.received += 1;
          let data = null;
          try { data = JSON.parse(e.data); } catch (err) { return; }
          const h = this.handlers[name] || this.handlers["*"];
          if (h) h(data, name);
          document.dispatchEvent(new CustomEvent("fleetledger:event", { detail: { name: name, id: e.lastEventId } }));
        });
      }
    },
    disconnect() {
      if (this.source) { this.source.close(); this.source = null; }
    },
  };
  window.fleetledgerLive = live;

  // ------------------------------------------------------------------ registry

  function setupRegistry() {
    const registry = $("#registry");
    if (!registry) return;
    let pending = 0;
    let paged = false;
    let pointerInList = false;

    const query = () => ($("#registry") && $("#registry").dataset.query) || "";
    const inspecting = () => paged || pointerInList || window.scrollY > 40 ||
      (document.activeElement && document.activeElement.closest && document.activeElement.closest("#runs"));

    const refreshResults = throttle(async () => {
      const q = query();
      const doc = await fragment("/ui/runs" + (q ? "?" + q : ""));
      replaceWith($("#results"), $("#results", doc));
      bindList();
    }, 300);
    const refreshSummary = throttle(async () => {
      const q = query();
      const doc = await fragment("/ui/summary" + (q ? "?" + q : ""));
      replaceWith($("#summary"), $("#summary", doc));
    }, 700);
    const refreshLane = throttle(async () => {
      const q = query();
      const doc = await fragment("/ui/lane" + (q ? "?" + q : ""));
      replaceWith($("#lane"), $("#lane", doc));
    }, 700);
    const cards = {};
    function refreshCard(runId) {
      if (!cards[runId]) {
        cards[runId] = throttle(async () => {
          const el = $('#runs li[data-run-id="' + CSS.escape(runId) + '"]');
          if (!el) return;
          const doc = await fragment("/ui/runs/" + encodeURIComponent(runId) + "/card");
          replaceWith($('#runs li[data-run-id="' + CSS.escape(runId) + '"]'), $("li.card", doc));
        }, 250);
      }
      cards[runId]();
    }

    function showNotice() {
      const btn = $("#new-runs");
      if (!btn) return;
      btn.hidden = pending === 0;
      btn.textContent = pending + (pending === 1 ? " new run" : " new runs");
    }

    function bindList() {
      const list = $("#runs");
      if (!list || list.dataset.bound) return;
      list.dataset.bound = "1";
      list.addEventListener("mouseenter", () => { pointerInList = true; });
      list.addEventListener("mouseleave", () => { pointerInList = false; });
    }
    bindList();

    // agent: type to search (suggestions in the datalist); the list follows on change
    const agentInput = $("#f-agent");
    if (agentInput) {
      let timer = null;
      agentInput.addEventListener("input", () => {
        clearTimeout(timer);
        timer = setTimeout(async () => {
          const doc = await fragment(agentInput.dataset.suggest + "?agent=" + encodeURIComponent(agentInput.value));
          const list = $("#agents");
          if (!list) return;
          list.replaceChildren(...$$("#agents option", doc).map(adopt));
        }, 120);
      });
    }

    document.body.addEventListener("click", (e) => {
      if (e.target.closest && e.target.closest("[data-paged]")) paged = true;
      if (e.target.closest && e.target.closest("#new-runs")) {
        pending = 0; paged = false; showNotice();
        window.scrollTo(0, 0);
        refreshResults();
      }
    });

    const handlers = {
      run_created: () => {
        if (inspecting()) { pending += 1; showNotice(); refreshSummary(); }
        else refreshResults();
      },
      run_updated: (d) => { refreshCard(d.run_id); refreshSummary(); },
      run_completed: (d) => { refreshCard(d.run_id); refreshSummary(); },
      run_failed: (d) => { refreshCard(d.run_id); refreshSummary(); refreshLane(); },
      intercept_created: () => { refreshLane(); refreshSummary(); },
    };
    const connect = () => {
      const el = $("#registry");
      if (el && el.dataset.events) { live.lastId = null; live.connect(el.dataset.events, handlers); }
    };
    connect();
    // the filter form swaps #registry: follow its new filters
    document.body.addEventListener("htmx:afterSettle", (e) => {
      if (e.target && e.target.id === "registry") { pending = 0; paged = false; showNotice(); bindList(); connect(); }
      if (e.target && e.target.id === "results") bindList();
    });
  }

  // ------------------------------------------------------------------ run page

  function setupRun() {
    const run = $("#run");
    if (!run) return;
    const runId = run.dataset.runId;
    const base = "/ui/runs/" + encodeURIComponent(runId);

    const appendActions = throttle(async () => {
      const list = $("#actions");
      if (!list) return;
      if (list.dataset.filtered === "true") { toast("New events arrived (a filter is active)"); return; }
      const last = list.dataset.lastSeq || "-1";
      const doc = await fragment(base + "/actions?after_seq=" + encodeURIComponent(last));
      const fresh = $$("#actions > li.action", doc);
      const current = $("#actions");
      if (!current || current.dataset.filtered === "true") return;
      const placeholder = $("#no-actions", current);
      if (placeholder && fresh.length) placeholder.remove();
      let lastSeq = parseInt(current.dataset.lastSeq || "-1", 10);
      const more = $("#more-actions", current);
      for (const li of fresh) {
        const seq = parseInt(li.dataset.seq, 10);
        if (seq <= lastSeq || $('li[data-seq="' + seq + '"]', current)) continue;
        const node = adopt(li);
        node.classList.add("new");
        if (more) current.insertBefore(node, more); else current.appendChild(node);
        if (window.htmx) window.htmx.process(node);
        lastSeq = seq;
      }
      current.dataset.lastSeq = String(lastSeq);
      if ($("#more-actions", doc)) appendActions();
    }, 40);
    const refreshHeader = throttle(async () => {
      const doc = await fragment(base + "/header");
      replaceWith($("#run-header"), $("#run-header", doc));
    }, 300);
    const refreshSections = throttle(async () => {
      const doc = await fragment(base + "/sections");
      replaceWith($("#sections"), $("#sections", doc));
    }, 300);

    const finished = (label) => (d) => {
      appendActions(); refreshHeader(); refreshSections();
      run.dataset.status = d.run ? d.run.status : label;
      toast("Run " + label);
    };
    live.connect(run.dataset.events, {
      run_created: () => { refreshHeader(); },
      action_created: () => { appendActions(); },
      run_updated: () => { refreshHeader(); },
      run_completed: finished("completed"),
      run_failed: finished("failed"),
      intercept_created: () => { refreshHeader(); },
    });

    // expand / collapse all
    document.body.addEventListener("click", (e) => {
      const t = e.target;
      if (!t.closest) return;
      if (t.closest("#expand-all")) $$("#actions details").forEach((d) => { d.open = true; });
      if (t.closest("#collapse-all")) $$("#actions details").forEach((d) => { d.open = false; });
      const summary = t.closest("#actions summary");
      if (summary) {
        $$("#actions li.selected").forEach((li) => li.classList.remove("selected"));
        summary.closest("li").classList.add("selected");
      }
      if (t.closest("#inspector-close")) closeInspector();
    });

    // a link to #seq-N opens that event
    const openHash = () => {
      const m = /^#seq-(\d+)$/.exec(location.hash);
      if (!m) return;
      const li = document.getElementById("seq-" + m[1]);
      if (!li) return;
      const det = $("details", li);
      if (det && !det.open) { const s = $("summary", li); if (s) s.click(); }
      li.scrollIntoView({ block: "center" });
    };
    window.addEventListener("hashchange", openHash);
    setTimeout(openHash, 50);
  }

  function closeInspector() {
    const insp = $("#inspector");
    if (!insp) return;
    insp.replaceChildren();
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "Click an action to inspect its event.";
    insp.appendChild(p);
    $$("#actions li.selected").forEach((li) => li.classList.remove("selected"));
  }

  // ------------------------------------------------------------------ shared UI

  function toast(text) {
    let box = $("#toasts");
    if (!box) {
      box = document.createElement("div");
      box.id = "toasts";
      document.body.appendChild(box);
    }
    const t = document.createElement("div");
    t.className = "toast";
    t.textContent = text;
    box.appendChild(t);
    setTimeout(() => t.remove(), 4000);
  }

  function showTab(id) {
    const btn = $('.tab[data-tab="' + CSS.escape(id) + '"]');
    if (!btn) return false;
    $$(".tab").forEach((b) => { b.classList.toggle("active", b === btn); b.setAttribute("aria-selected", b === btn ? "true" : "false"); });
    $$(".tab-panel").forEach((p) => p.classList.toggle("hidden", p.dataset.panel !== id));
    return true;
  }

  function focusSearch() {
    const el = $$("[data-search]").find((x) => x.offsetParent !== null);
    if (el) { el.focus(); el.select && el.select(); return true; }
    return false;
  }

  async function copy(text, btn) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {
      const ta = document.createElement("textarea");
      ta.value = text;
      ta.setAttribute("readonly", "");
      ta.className = "offscreen";
      document.body.appendChild(ta);
      ta.select();
      document.execCommand("copy");
      ta.remove();
    }
    const old = btn.textContent;
    btn.textContent = "Copied";
    setTimeout(() => { btn.textContent = old; }, 1200);
  }

  // The keyboard: "/" search, a tab's key (t, and whatever tabs the page declares),
  // "?" help, Escape.
  function shortcuts() {
    const keys = { "/": focusSearch, "?": () => { const d = $("#help"); if (d && !d.open) d.showModal(); return true; } };
    $$(".tab[data-key]").forEach((b) => { keys[b.dataset.key] = () => showTab(b.dataset.tab); });
    return keys;
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const typing = t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
    if (e.key === "Escape") {
      if (typing) t.blur(); else closeInspector();
      return;
    }
    if (typing) return;
    const action = shortcuts()[e.key];
    if (action && action()) e.preventDefault();
  });

  document.addEventListener("click", (e) => {
    const t = e.target;
    if (!t.closest) return;
    const tab = t.closest(".tab[data-tab]");
    if (tab) showTab(tab.dataset.tab);
    const btn = t.closest("button.copy[data-copy]");
    if (btn) { e.preventDefault(); e.stopPropagation(); copy(btn.dataset.copy, btn); }
    if (t.closest("#help-open")) { const d = $("#help"); if (d) d.showModal(); }
  });

  document.addEventListener("DOMContentLoaded", () => {
    setupRegistry();
    setupRun();
  });
})();
