// <fs-details>: one calendar entry and what the desk does with it: check in, arrived, no-show,
// cancel with a reason, reschedule (through <fs-find>), remove blocked time. Each action is
// one FHIR write; a refusal is shown in the server's words.
import { LitElement, css, html } from "lit";
import { notice, noticeStyles } from "./notice.js";
import { EXT, extension } from "./api.js";
import { KIND_WORDS } from "./calendar.js";
import { hhmm, longDay } from "./time.js";

const REASONS = [
  ["pat", "Patient"], ["prov", "Provider"], ["maint", "Equipment maintenance"],
  ["meds", "Medication issue"], ["other", "Other"],
];
const REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/appointment-cancellation-reason";

export class Details extends LitElement {
  static properties = {
    fhir: { attribute: false },
    entry: { attribute: false },
    names: { attribute: false },
    message: { state: true },
    busy: { state: true },
  };

  static styles = [noticeStyles, css`
    :host { display: block; }
    dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 0.75rem; }
    dt { font-weight: 600; }
    .actions { display: flex; flex-wrap: wrap; gap: 0.4rem; margin: 0.5rem 0; }
    button, select, input { font: inherit; padding: 4px 8px; cursor: pointer; }
    fieldset { border: 1px solid #c8ccd0; border-radius: 4px; }
    .flag { color: #8b1c1c; }
  `];

  constructor() {
    super();
    this.entry = null;
    this.names = {};
    this.message = null;
    this.busy = false;
  }

  updated(changed) {
    // a new entry clears the last message; the same entry, re-read after a write, keeps it
    const before = changed.get("entry");
    if (changed.has("entry") && (before && before.key) !== (this.entry && this.entry.key)) {
      this.message = null;
    }
  }

  changed() {
    this.dispatchEvent(new CustomEvent("fs-changed", { bubbles: true, composed: true }));
  }

  async run(words, write) {
    this.busy = true;
    try {
      await write();
      this.message = { ok: true, text: words };
      this.changed();
    } catch (err) {
      this.message = { ok: false, text: err.message };
    } finally {
      this.busy = false;
    }
  }

  status(status, words) {
    const appt = this.entry.appointment;
    return this.run(words, async () => {
      const ops = [{ op: "replace", path: "/status", value: status }];
      this.entry = { ...this.entry, appointment: await this.fhir.patch(`Appointment/${appt.id}`,
        ops) };
    });
  }

  cancel(ev) {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const code = form.get("reason");
    const text = form.get("note");
    const appt = this.entry.appointment;
    const reason = { coding: [{ system: REASON_SYSTEM, code,
      display: (REASONS.find((r) => r[0] === code) || [])[1] }] };
    if (text) reason.text = text;
    return this.run("Cancelled.", async () => {
      this.entry = { ...this.entry, appointment: await this.fhir.patch(`Appointment/${appt.id}`,
        [{ op: "replace", path: "/status", value: "cancelled" },
          { op: "add", path: "/cancelationReason", value: reason }]) };
    });
  }

  unblock() {
    return this.run("Blocked time removed.", () => this.fhir.request("DELETE",
      `Slot/${this.entry.slot.id}`));
  }

  reschedule() {
    this.dispatchEvent(new CustomEvent("fs-reschedule", { bubbles: true, composed: true,
      detail: this.entry.appointment }));
  }

  renderAppointment(appt) {
    const flags = extension(appt, EXT + "booking-flag");
    const open = ["booked", "pending", "arrived", "checked-in"].includes(appt.status);
    return html`
      <dl>
        <dt>When</dt><dd>${longDay(this.entry.start)}, ${hhmm(this.entry.start)}–${hhmm(
          this.entry.end)}</dd>
        <dt>Status</dt><dd>${appt.status}</dd>
        <dt>Patient</dt><dd>${this.entry.label}</dd>
        <dt>With</dt><dd>${(appt.participant || []).map((p) => p.actor && p.actor.reference)
          .filter((r) => r && !r.startsWith("Patient/")).map((r) => this.names[r] || r)
          .join(", ")}</dd>
        ${flags.length ? html`<dt class="flag">Breaks</dt><dd class="flag">${flags.map((f) => {
          const sub = Object.fromEntries((f.extension || []).map((x) => [x.url,
            x.valueCode || x.valueString]));
          return html`<div>${sub.detail || sub.rule}</div>`;
        })}</dd>` : ""}
      </dl>
      ${open ? html`<div class="actions">
        <button ?disabled=${this.busy} @click=${() => this.status("checked-in", "Checked in.")}
          >Check in</button>
        <button ?disabled=${this.busy} @click=${() => this.status("arrived", "Arrived.")}
          >Arrived</button>
        <button ?disabled=${this.busy} @click=${() => this.status("noshow", "Marked no-show.")}
          >No-show</button>
        <button ?disabled=${this.busy} @click=${this.reschedule}>Reschedule</button>
      </div>
      <form @submit=${this.cancel}><fieldset><legend>Cancel this visit</legend>
        <label>Reason <select name="reason">${REASONS.map(([c, w]) =>
          html`<option value=${c}>${w}</option>`)}</select></label>
        <label>Note <input name="note" type="text"></label>
        <button type="submit" ?disabled=${this.busy}>Cancel visit</button>
      </fieldset></form>` : ""}`;
  }

  render() {
    const e = this.entry;
    if (!e) return html`<p>Choose an entry in the calendar.</p>`;
    return html`<h2>${KIND_WORDS[e.kind] || e.kind}</h2>
      ${e.appointment ? this.renderAppointment(e.appointment) : html`
        <p>${longDay(e.start)}, ${hhmm(e.start)}–${hhmm(e.end)}: ${e.label}</p>
        <button ?disabled=${this.busy} @click=${this.unblock}>Remove blocked time</button>`}
      ${notice(this.message)}`;
  }
}

customElements.define("fs-details", Details);
