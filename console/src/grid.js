// <fs-grid>: the calendar, as a table (rows and column headers a screen reader can follow).
// Week view: a row per resource, a column per day. Day view: a row per quarter hour, a column
// per resource. Every entry is a button (keyboard: Tab to it, Enter opens it); in the day view
// an appointment can be dragged to another time or resource, which asks the console to
// reschedule it (one $book with cancelled-appt-id).
import { LitElement, css, html } from "lit";
import { KIND_WORDS } from "./calendar.js";
import { addDays, dayLabel, hhmm, sameDay } from "./time.js";

const QUARTER = 15 * 60 * 1000;

export class Grid extends LitElement {
  static properties = {
    view: { type: String }, // "week" | "day"
    days: { attribute: false }, // Date[] (local midnights)
    resources: { attribute: false }, // [{ref, name}]
    entries: { attribute: false },
    dayStart: { type: Number },
    dayEnd: { type: Number },
  };

  static styles = css`
    :host { display: block; overflow: auto; max-height: calc(100vh - 11rem); }
    table { border-collapse: collapse; width: 100%; table-layout: fixed; font-size: 0.85rem; }
    th, td { border: 1px solid #c8ccd0; padding: 2px 3px; vertical-align: top; }
    thead th { position: sticky; top: 0; background: #eef1f4; z-index: 1; }
    th[scope="row"] { text-align: left; background: #f7f8f9; width: 11rem;
      position: sticky; left: 0; }
    td.slot { height: 1.6rem; }
    td.over { outline: 3px solid #1d4ed8; outline-offset: -3px; }
    .time { width: 4.5rem; }
    button.entry { display: block; width: 100%; text-align: left; margin: 1px 0;
      border: 1px solid #555; border-left-width: 6px; border-radius: 3px; padding: 1px 4px;
      font: inherit; cursor: pointer; background: #fff; color: #111; overflow: hidden;
      white-space: nowrap; text-overflow: ellipsis; position: relative; }
    button.entry:focus-visible { outline: 3px solid #1d4ed8; outline-offset: 1px; }
    .booked { border-left-color: #1e6b2f; background: #e7f5ea; }
    .held { border-left-color: #8a5a00; background: #fff4dc; border-style: dashed; }
    .arrived { border-left-color: #0b4f8a; background: #e3effa; }
    .noshow { border-left-color: #8b1c1c; background: #fbe7e7; }
    .blocked { border-left-color: #444; background: repeating-linear-gradient(45deg, #eee,
      #eee 6px, #ddd 6px, #ddd 12px); }
    .flagged { border-left-color: #b00020; background: #ffe4ec; }
    .offer { border-left-color: #6b21a8; background: #f3e8ff; }
    .waitlist { border-left-color: #6b21a8; }
    .kind { font-weight: 600; }
    .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
      white-space: nowrap; }
    .empty { color: #555; font-style: italic; }
  `;

  constructor() {
    super();
    this.view = "week";
    this.days = [];
    this.resources = [];
    this.entries = [];
    this.dayStart = 7;
    this.dayEnd = 19;
  }

  open(entry) {
    this.dispatchEvent(new CustomEvent("fs-open", { detail: entry, bubbles: true,
      composed: true }));
  }

  entryButton(e, draggable) {
    // The visible text starts the accessible name (WCAG 2.5.3); the rest is for screen readers
    const more = `, until ${hhmm(e.end)}, ${KIND_WORDS[e.kind] || e.kind}`;
    return html`<button class="entry ${e.kind}" data-key=${e.key} draggable=${draggable ? "true"
      : "false"} title=${`${hhmm(e.start)} ${e.label}${more}`} @click=${() => this.open(e)}
      @dragstart=${(ev) => { ev.dataTransfer.setData("text/plain", e.key);
        ev.dataTransfer.effectAllowed = "move"; }}
      ><span class="kind">${hhmm(e.start)}</span> ${e.label}<span class="sr">${more}</span
      ></button>`;
  }

  renderWeek() {
    const byCell = new Map();
    for (const e of this.entries) {
      const day = this.days.findIndex((d) => sameDay(d, e.start));
      if (day < 0) continue;
      const k = `${e.resource}|${day}`;
      if (!byCell.has(k)) byCell.set(k, []);
      byCell.get(k).push(e);
    }
    return html`<table aria-label="Week">
      <thead><tr><th scope="col">Resource</th>${this.days.map((d) =>
        html`<th scope="col">${dayLabel(d)}</th>`)}</tr></thead>
      <tbody>${this.resources.map((r) => html`<tr><th scope="row">${r.name}</th>
        ${this.days.map((d, i) => html`<td>${(byCell.get(`${r.ref}|${i}`) || []).map((e) =>
          this.entryButton(e, false))}</td>`)}</tr>`)}</tbody></table>`;
  }

  renderDay() {
    const day = this.days[0];
    const rows = [];
    for (let h = this.dayStart * 4; h < this.dayEnd * 4; h++) {
      rows.push(new Date(day.getFullYear(), day.getMonth(), day.getDate(), 0, h * 15));
    }
    const byCell = new Map();
    for (const e of this.entries) {
      if (!sameDay(e.start, day)) continue;
      const row = Math.max(0, Math.min(rows.length - 1, Math.floor((e.start - rows[0]) / QUARTER)));
      const k = `${e.resource}|${row}`;
      if (!byCell.has(k)) byCell.set(k, []);
      byCell.get(k).push(e);
    }
    return html`<table aria-label="Day">
      <thead><tr><th scope="col" class="time">Time</th>${this.resources.map((r) =>
        html`<th scope="col">${r.name}</th>`)}</tr></thead>
      <tbody>${rows.map((t, i) => html`<tr><th scope="row" class="time">${hhmm(t)}</th>
        ${this.resources.map((r) => html`<td class="slot" data-resource=${r.ref}
          data-start=${t.toISOString()}
          @dragover=${(ev) => { ev.preventDefault(); ev.currentTarget.classList.add("over"); }}
          @dragleave=${(ev) => ev.currentTarget.classList.remove("over")}
          @drop=${(ev) => this.dropped(ev, r.ref, t)}
          >${(byCell.get(`${r.ref}|${i}`) || []).map((e) =>
            this.entryButton(e, Boolean(e.appointment)))}</td>`)}</tr>`)}</tbody></table>`;
  }

  dropped(ev, resource, start) {
    ev.preventDefault();
    ev.currentTarget.classList.remove("over");
    const key = ev.dataTransfer.getData("text/plain");
    const entry = this.entries.find((e) => e.key === key);
    if (!entry || !entry.appointment) return;
    this.dispatchEvent(new CustomEvent("fs-move", { bubbles: true, composed: true,
      detail: { entry, resource, start } }));
  }

  render() {
    if (!this.resources.length) {
      return html`<p class="empty">Choose practitioners, rooms or devices to see their
        calendars.</p>`;
    }
    return this.view === "day" ? this.renderDay() : this.renderWeek();
  }
}

customElements.define("fs-grid", Grid);

export function weekDays(start) {
  return Array.from({ length: 7 }, (_, i) => addDays(start, i));
}
