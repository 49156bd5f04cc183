// <fs-console>: the front-desk console. A SMART app that uses only the public FHIR API:
// calendars of practitioners, rooms and devices (day and week), finding and booking free time,
// rescheduling by drag or by search, check-in, no-show, cancellation, blocked time, the
// waitlist and its offers, and KPIs. It follows changes made elsewhere (another desk, an SIU
// feed, the server's own jobs) by reading the Appointment and Slot history forward.
import { LitElement, css, html } from "lit";
import { EXT, connect, extension, name } from "./api.js";
import { load } from "./calendar.js";
import { Live } from "./live.js";
import "./details.js";
import "./find.js";
import { weekDays } from "./grid.js";
import { addDays, fromDateInput, instant, isoDate, longDay, startOfDay, startOfWeek } from
  "./time.js";
import "./waitlist.js";

const POLL_MS = 3000; // while the live socket is down
const SLOW_POLL_MS = 30000; // while it is up: for what no topic reports
const TABS = [["calendar", "Calendar"], ["find", "Find & book"], ["waitlist", "Waitlist"],
  ["kpis", "KPIs"]];

export class Console extends LitElement {
  static properties = {
    fhir: { state: true },
    error: { state: true },
    tab: { state: true },
    view: { state: true },
    anchor: { state: true },
    resources: { state: true }, // every calendar resource: [{ref, name, schedule}]
    chosen: { state: true }, // Set of refs
    entries: { state: true },
    selected: { state: true },
    visitTypes: { state: true },
    contextPatient: { state: true },
    reschedule: { state: true },
    notice: { state: true },
    live: { state: true },
    loading: { state: true },
  };

  static styles = css`
    :host { display: block; }
    header { display: flex; align-items: center; gap: 1rem; flex-wrap: wrap;
      padding: 0.5rem 1rem; background: #1e3a8a; color: #fff; }
    header h1 { font-size: 1.2rem; margin: 0; }
    nav ul { display: flex; gap: 0.25rem; list-style: none; margin: 0; padding: 0;
      flex-wrap: wrap; }
    nav button { font: inherit; padding: 6px 12px; border: 1px solid #fff; border-radius: 4px;
      background: transparent; color: #fff; cursor: pointer; }
    nav button[aria-current="page"] { background: #fff; color: #1e3a8a; font-weight: 700; }
    .who { margin-left: auto; }
    main { display: grid; grid-template-columns: minmax(13rem, 16rem) 1fr minmax(16rem, 22rem);
      gap: 0.75rem; padding: 0.75rem; }
    main.single { grid-template-columns: 1fr; max-width: 60rem; }
    @media (max-width: 1100px) {
      main { grid-template-columns: 1fr; }
    }
    .toolbar { display: flex; gap: 0.4rem; align-items: center; flex-wrap: wrap;
      margin-bottom: 0.5rem; }
    .toolbar h2 { font-size: 1rem; margin: 0 0.5rem 0 0; }
    button, select, input { font: inherit; padding: 4px 8px; }
    button { cursor: pointer; }
    button[aria-pressed="true"] { background: #1e3a8a; color: #fff; }
    fieldset { border: 1px solid #c8ccd0; border-radius: 4px; margin: 0 0 0.5rem 0; }
    fieldset label { display: block; padding: 2px 0; }
    .scroll { max-height: 50vh; overflow: auto; }
    .notice { padding: 6px; background: #e3effa; color: #0b2545; border-radius: 4px; }
    .error { padding: 1rem; background: #fbe7e7; color: #5c1010; }
    section { min-width: 0; }
    form.block { display: grid; gap: 0.3rem; }
    h2 { font-size: 1.1rem; }
  `;

  constructor() {
    super();
    this.view = localStorage.getItem("fs-view") || "week";
    this.anchor = startOfDay(new Date());
    this.route();
    this.resources = [];
    this.chosen = new Set(JSON.parse(localStorage.getItem("fs-chosen") || "[]"));
    this.entries = [];
    this.selected = null;
    this.visitTypes = [];
    this.contextPatient = null;
    this.reschedule = null;
    this.notice = "";
    this.live = "";
    this.loading = false;
    this.since = null;
  }

  async connectedCallback() {
    super.connectedCallback();
    window.addEventListener("hashchange", () => {
      const before = `${this.view}|${this.anchor}`;
      this.route();
      if (this.fhir && before !== `${this.view}|${this.anchor}`) this.reload();
    });
    try {
      this.fhir = await connect();
      await Promise.all([this.loadResources(), this.loadVisitTypes()]);
      await this.takeLaunchContext();
      await this.reload();
      this.since = new Date().toISOString();
      this.live = "";
      this.startLive();
      this.schedulePoll();
      await this.updateComplete;
      window.fsReadyAt = performance.now();
      document.body.dataset.ready = "true";
    } catch (err) {
      this.error = err.message || String(err);
    }
  }

  /** #calendar/2026-12-09/day: the tab, and for the calendar its day and view (bookmarkable;
   * the hash survives the SMART sign-in, which the query does not). */
  route() {
    const [tab, day, view] = location.hash.replace(/^#/, "").split("/");
    this.tab = TABS.some(([id]) => id === tab) ? tab : "calendar";
    if (day && /^\d{4}-\d{2}-\d{2}$/.test(day)) this.anchor = fromDateInput(day);
    if (view === "day" || view === "week") this.view = view;
  }

  disconnectedCallback() {
    super.disconnectedCallback();
    clearTimeout(this.poller);
    if (this.feed) this.feed.stop();
  }

  async loadResources() {
    const { resources: schedules } = await this.fhir.searchAll("Schedule", { active: "true" });
    const refs = new Map();
    for (const s of schedules) {
      for (const a of s.actor || []) {
        const ref = a.reference || "";
        if (!/^(Practitioner|Location|Device|PractitionerRole)\//.test(ref)) continue;
        if (!refs.has(ref)) refs.set(ref, { ref, name: a.display || "", schedule: s.id });
      }
    }
    for (const type of ["Practitioner", "Location"]) {
      const ids = [...refs.keys()].filter((r) => r.startsWith(`${type}/`))
        .map((r) => r.split("/")[1]);
      for (let i = 0; i < ids.length; i += 100) {
        const { resources } = await this.fhir.searchAll(type, { _id: ids.slice(i, i + 100)
          .join(",") });
        for (const r of resources) refs.get(`${type}/${r.id}`).name = name(r);
      }
    }
    this.resources = [...refs.values()].map((r) => ({ ...r, name: r.name || r.ref }))
      .sort((a, b) => a.ref.split("/")[0].localeCompare(b.ref.split("/")[0]) ||
        a.name.localeCompare(b.name));
    const known = new Set(this.resources.map((r) => r.ref));
    this.chosen = new Set([...this.chosen].filter((r) => known.has(r)));
    if (!this.chosen.size) {
      this.chosen = new Set(this.resources.filter((r) => r.ref.startsWith("Practitioner/"))
        .slice(0, 8).map((r) => r.ref));
    }
  }

  /** An EHR launch opens the console on what the EHR has on screen: its calendars (the
   * practitioners, rooms or Schedules in fhirContext) and its patient, ready to book for. */
  async takeLaunchContext() {
    const { patient, resources } = this.fhir.context;
    const known = new Map(this.resources.map((r) => [r.ref, r]));
    const bySchedule = new Map(this.resources.map((r) => [`Schedule/${r.schedule}`, r.ref]));
    const shown = resources.map((r) => (known.has(r) ? r : bySchedule.get(r))).filter(Boolean);
    if (shown.length) this.chosen = new Set(shown);
    if (patient) {
      try {
        this.contextPatient = { ref: patient, name: name(await this.fhir.get(patient)) };
      } catch {
        this.contextPatient = { ref: patient, name: patient };
      }
    }
  }

  async loadVisitTypes() {
    const { resources } = await this.fhir.searchAll("HealthcareService", {}, 1000);
    const out = [];
    for (const s of resources) {
      for (const vt of extension(s, EXT + "visit-type")) {
        const sub = (vt.extension || []).find((x) => x.url === "code");
        const c = sub && sub.valueCoding;
        if (!c) continue;
        out.push({ token: c.system ? `${c.system}|${c.code}` : c.code,
          label: `${c.display || c.code} (${s.name || s.id})` });
      }
    }
    this.visitTypes = out;
  }

  get days() {
    return this.view === "day" ? [this.anchor] : weekDays(startOfWeek(this.anchor));
  }

  async reload() {
    const days = this.days;
    this.loading = true;
    const t0 = performance.now();
    let t1 = t0;
    try {
      this.entries = await load(this.fhir, [...this.chosen], days[0],
        addDays(days[days.length - 1], 1));
      t1 = performance.now();
    } finally {
      this.loading = false;
    }
    // how long reading and drawing took (bench/faces_bench.py reads these)
    this.updateComplete.then(async () => {
      const grid = this.shadowRoot.querySelector("fs-grid");
      if (grid) await grid.updateComplete;
      (window.fsTimings = window.fsTimings || []).push({ fetch: t1 - t0,
        render: performance.now() - t1, entries: this.entries.length,
        resources: this.chosen.size });
    });
    if (this.selected) {
      // an entry that left the calendar (cancelled) stays open, with what was done to it
      this.selected = this.entries.find((e) => e.key === this.selected.key) || this.selected;
    }
  }

  startLive() {
    this.socketUp = false;
    this.feed = new Live(this.fhir, () => {
      window.fsNotifications = (window.fsNotifications || 0) + 1;
      this.changedElsewhere();
    }, (state) => {
      this.socketUp = state === "live";
      document.body.dataset.live = state;
    });
    this.feed.start().catch(() => { this.socketUp = false; });
  }

  schedulePoll() {
    clearTimeout(this.poller);
    this.poller = setTimeout(async () => {
      await this.poll();
      this.schedulePoll();
    }, this.socketUp ? SLOW_POLL_MS : POLL_MS);
  }

  /** A notification came: read the calendar (and the waitlist) again, at most one at a time. */
  async changedElsewhere() {
    if (this.refreshing) {
      this.again = true;
      return;
    }
    this.refreshing = true;
    try {
      do {
        this.again = false;
        await this.reload();
        const board = this.shadowRoot.querySelector("fs-waitlist");
        if (board) await board.refresh();
        this.live = `Updated ${new Date().toLocaleTimeString()}`;
      } while (this.again);
    } finally {
      this.refreshing = false;
    }
  }

  async poll() {
    if (!this.fhir || document.hidden) return;
    const since = this.since;
    this.since = new Date(Date.now() - 2000).toISOString(); // overlap: commits land late
    try {
      const changed = await Promise.all(["Appointment", "Slot"].map((t) =>
        this.fhir.get(`${t}/_history`, { _since: since, _count: 1 })));
      if (changed.some((b) => (b.entry || []).length)) await this.changedElsewhere();
    } catch {
      this.since = since;
    }
  }

  go(tab) {
    location.hash = tab === "calendar" ? `calendar/${isoDate(this.anchor)}/${this.view}` : tab;
    this.tab = tab;
  }

  setView(view) {
    this.view = view;
    localStorage.setItem("fs-view", view);
    this.go("calendar");
    this.reload();
  }

  shift(n) {
    this.anchor = n === 0 ? startOfDay(new Date()) : addDays(this.anchor,
      n * (this.view === "day" ? 1 : 7));
    this.go("calendar");
    this.reload();
  }

  toggle(ref, on) {
    const next = new Set(this.chosen);
    if (on) next.add(ref); else next.delete(ref);
    this.chosen = next;
    localStorage.setItem("fs-chosen", JSON.stringify([...next]));
    this.reload();
  }

  async move(ev) {
    const { entry, resource, start } = ev.detail;
    const old = entry.appointment;
    const length = new Date(old.end) - new Date(old.start);
    const end = new Date(start.getTime() + length);
    const proposal = {
      resourceType: "Appointment", status: "proposed", start: instant(start), end: instant(end),
      requestedPeriod: [{ start: instant(start), end: instant(end) }],
      participant: (old.participant || []).map((p) => (p.actor && p.actor.reference ===
        entry.resource ? { ...p, actor: { reference: resource } } : p)),
    };
    for (const key of ["serviceType", "appointmentType", "specialty", "reasonCode",
      "description", "supportingInformation", "basedOn", "priority", "comment"]) {
      if (old[key] !== undefined) proposal[key] = old[key];
    }
    try {
      await this.fhir.post("Appointment/$book", { resourceType: "Parameters", parameter: [
        { name: "appt-resource", resource: proposal },
        { name: "cancelled-appt-id", valueReference: { reference: `Appointment/${old.id}` } }] });
      this.notice = `Moved to ${longDay(start)} ${start.toLocaleTimeString([], {
        hour: "2-digit", minute: "2-digit" })}.`;
    } catch (err) {
      this.notice = `Not moved: ${err.message}`;
    }
    await this.reload();
  }

  async block(ev) {
    ev.preventDefault();
    const element = ev.target;
    const form = new FormData(element);
    const resource = this.resources.find((r) => r.ref === form.get("resource"));
    const day = form.get("day");
    const slot = {
      resourceType: "Slot", schedule: { reference: `Schedule/${resource.schedule}` },
      status: "busy-unavailable", start: instant(fromDateInput(day, form.get("from"))),
      end: instant(fromDateInput(day, form.get("to"))), comment: form.get("why") || "Blocked",
    };
    try {
      await this.fhir.post("Slot", slot);
      this.notice = `Blocked ${resource.name} on ${day}.`;
      element.reset();
    } catch (err) {
      this.notice = `Not blocked: ${err.message}`;
    }
    await this.reload();
  }

  renderCalendar() {
    const chosen = this.resources.filter((r) => this.chosen.has(r.ref));
    const days = this.days;
    const title = this.view === "day" ? longDay(days[0])
      : `${longDay(days[0])} – ${longDay(days[6])}`;
    return html`<main>
      <section aria-label="Calendars to show">
        <fieldset><legend>Calendars</legend><div class="scroll">
          ${this.resources.map((r) => html`<label><input type="checkbox"
            .checked=${this.chosen.has(r.ref)}
            @change=${(e) => this.toggle(r.ref, e.target.checked)}> ${r.name}
            <small>(${r.ref.split("/")[0]})</small></label>`)}
        </div></fieldset>
        <form class="block" @submit=${this.block}><fieldset><legend>Block time</legend>
          <label>Calendar <select name="resource">${this.resources.map((r) =>
            html`<option value=${r.ref}>${r.name}</option>`)}</select></label>
          <label>Day <input type="date" name="day" required value=${isoDate(this.anchor)}></label>
          <label>From <input type="time" name="from" required value="12:00"></label>
          <label>To <input type="time" name="to" required value="13:00"></label>
          <label>Why <input type="text" name="why"></label>
          <button type="submit">Block</button></fieldset></form>
      </section>
      <section aria-label="Calendar">
        <div class="toolbar">
          <h2>${title}</h2>
          <button aria-pressed=${this.view === "day"} @click=${() => this.setView("day")}>Day
          </button>
          <button aria-pressed=${this.view === "week"} @click=${() => this.setView("week")}>Week
          </button>
          <button @click=${() => this.shift(-1)} aria-label="Previous">‹</button>
          <button @click=${() => this.shift(0)}>Today</button>
          <button @click=${() => this.shift(1)} aria-label="Next">›</button>
          <span role="status" class=${this.notice ? "notice" : ""}>${this.notice}</span>
          <span class="live" aria-hidden="true">${this.loading ? "Loading…" : this.live}</span>
        </div>
        <fs-grid .view=${this.view} .days=${days} .resources=${chosen} .entries=${this.entries}
          @fs-open=${(e) => { this.selected = e.detail; }} @fs-move=${this.move}></fs-grid>
      </section>
      <aside aria-label="Selected entry">
        <fs-details .fhir=${this.fhir} .entry=${this.selected}
          .names=${Object.fromEntries(this.resources.map((r) => [r.ref, r.name]))}
          @fs-changed=${() => this.reload()}
          @fs-reschedule=${(e) => { this.reschedule = e.detail; this.go("find"); }}>
        </fs-details>
      </aside>
    </main>`;
  }

  renderTab() {
    if (this.tab === "find") {
      return html`<main class="single"><fs-find .fhir=${this.fhir} .visitTypes=${this.visitTypes}
        .practitioners=${this.resources.filter((r) => r.ref.startsWith("Practitioner/"))}
        .names=${Object.fromEntries(this.resources.map((r) => [r.ref, r.name]))}
        .reschedule=${this.reschedule} .patient=${this.contextPatient} @fs-changed=${() => { this.reschedule = null;
          this.reload(); }}></fs-find></main>`;
    }
    if (this.tab === "waitlist") {
      return html`<main class="single"><fs-waitlist .fhir=${this.fhir}
        @fs-changed=${() => this.reload()}></fs-waitlist></main>`;
    }
    if (this.tab === "kpis") {
      import("./kpis.js");
      return html`<main class="single"><fs-kpis .fhir=${this.fhir}
        .resources=${this.resources}></fs-kpis></main>`;
    }
    return this.renderCalendar();
  }

  render() {
    if (this.error) return html`<p class="error" role="alert">${this.error}</p>`;
    if (!this.fhir) return html`<p aria-live="polite">Signing in…</p>`;
    const user = this.fhir.user;
    return html`<header>
        <h1>fhir-sched front desk</h1>
        <nav aria-label="Sections"><ul>${TABS.map(([id, words]) => html`<li><button
          aria-current=${this.tab === id ? "page" : "false"} @click=${() => this.go(id)}
          >${words}</button></li>`)}</ul></nav>
        ${this.contextPatient ? html`<span>Patient: <strong>${this.contextPatient.name}</strong>
          </span>` : ""}
        <span class="who">${user ? `Signed in as ${user}` : "Auth off"}</span>
      </header>${this.renderTab()}`;
  }
}

customElements.define("fs-console", Console);
