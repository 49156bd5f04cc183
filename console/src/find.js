// <fs-find>: free time for a visit type across resources ($find), for a patient and their
// preferences; hold or book what was found. In reschedule mode the booking carries
// cancelled-appt-id: the old visit is cancelled in the same $book, never in a separate step.
import { LitElement, css, html } from "lit";
import { notice, noticeStyles } from "./notice.js";
import { EXT, name } from "./api.js";
import { addDays, fromDateInput, hhmm, instant, isoDate, longDay } from "./time.js";

const TIMING = {
  any: null,
  morning: { repeat: { when: ["MORN"] } },
  afternoon: { repeat: { when: ["AFT"] } },
};

export class Find extends LitElement {
  static properties = {
    fhir: { attribute: false },
    visitTypes: { attribute: false },
    practitioners: { attribute: false },
    names: { attribute: false }, // reference -> display name
    reschedule: { attribute: false }, // the Appointment being moved, or null
    options: { state: true },
    patients: { state: true },
    patient: { state: true },
    message: { state: true },
    busy: { state: true },
  };

  static styles = [noticeStyles, css`
    form { display: grid; gap: 0.5rem; }
    label { display: grid; gap: 2px; font-weight: 600; }
    input, select, button { font: inherit; padding: 4px 6px; }
    .row { display: flex; gap: 0.5rem; flex-wrap: wrap; }
    ul { list-style: none; padding: 0; margin: 0.5rem 0; }
    li { display: flex; gap: 0.5rem; align-items: center; padding: 4px 0;
      border-bottom: 1px solid #ddd; flex-wrap: wrap; }
    li span { flex: 1 1 12rem; }
    button.primary { background: #1e3a8a; color: #fff; border: 1px solid #1e3a8a;
      border-radius: 4px; }
    button { cursor: pointer; }
  `];

  constructor() {
    super();
    this.visitTypes = [];
    this.practitioners = [];
    this.names = {};
    this.options = [];
    this.patients = [];
    this.patient = null;
    this.reschedule = null;
    this.message = null;
    this.busy = false;
  }

  updated(changed) {
    if (changed.has("reschedule") && this.reschedule) {
      const p = (this.reschedule.participant || []).map((x) => x.actor && x.actor.reference)
        .find((r) => r && r.startsWith("Patient/"));
      this.patient = p ? { ref: p, name: p } : null;
    }
  }

  async searchPatients(ev) {
    const text = ev.target.value.trim();
    if (text.length < 2) {
      this.patients = [];
      return;
    }
    const bundle = await this.fhir.get("Patient", { name: text, _count: 10 });
    this.patients = (bundle.entry || []).map((e) => ({ ref: `Patient/${e.resource.id}`,
      name: name(e.resource), birthDate: e.resource.birthDate }));
  }

  async find(ev) {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const from = fromDateInput(form.get("from"));
    const to = addDays(fromDateInput(form.get("to")), 1);
    const params = [{ name: "start", valueDateTime: instant(from) },
      { name: "end", valueDateTime: instant(to) }, { name: "_count", valueInteger: 10 }];
    const visit = form.get("visit");
    if (visit) params.push({ name: "visit-type", valueString: visit });
    if (this.patient) {
      params.push({ name: "patient-reference", valueReference: { reference: this.patient.ref } });
    }
    const practitioner = form.get("practitioner");
    if (practitioner) {
      params.push({ name: "practitioner", valueReference: { reference: practitioner } });
    }
    const timing = TIMING[form.get("timing")];
    if (timing) params.push({ name: "timing", valueTiming: timing });
    this.busy = true;
    this.message = null;
    try {
      const bundle = await this.fhir.post("Appointment/$find",
        { resourceType: "Parameters", parameter: params });
      this.options = (bundle.entry || []).map((e) => e.resource)
        .filter((r) => r && r.resourceType === "Appointment");
      if (!this.options.length) this.message = { text: "No free time in that window.", ok: false };
    } catch (err) {
      this.options = [];
      this.message = { text: err.message, ok: false };
    } finally {
      this.busy = false;
    }
  }

  async act(option, operation) {
    const parameter = [{ name: "appt-resource", resource: option }];
    if (operation === "book" && this.reschedule) {
      parameter.push({ name: "cancelled-appt-id",
        valueReference: { reference: `Appointment/${this.reschedule.id}` } });
    }
    this.busy = true;
    try {
      const bundle = await this.fhir.post(`Appointment/$${operation}`,
        { resourceType: "Parameters", parameter });
      const appt = (bundle.entry || []).map((e) => e.resource)
        .find((r) => r && r.resourceType === "Appointment");
      const expires = ((appt && appt.extension) || []).find((e) => e.url === EXT +
        "hold-expires");
      this.message = { ok: true, text: operation === "hold"
        ? `Held${expires ? ` until ${hhmm(new Date(expires.valueInstant))}` : ""}: book it from ` +
          "the calendar before then."
        : this.reschedule ? "Rescheduled." : "Booked." };
      this.options = [];
      this.dispatchEvent(new CustomEvent("fs-changed", { bubbles: true, composed: true,
        detail: { appointment: appt, operation } }));
      if (operation === "book" && this.reschedule) this.reschedule = null;
    } catch (err) {
      this.message = { text: `Not ${operation === "hold" ? "held" : "booked"}: ${err.message}`,
        ok: false };
    } finally {
      this.busy = false;
    }
  }

  actors(option) {
    return (option.participant || []).map((p) => p.actor && p.actor.reference)
      .filter((r) => r && !r.startsWith("Patient/"))
      .map((r) => this.names[r] || r).join(", ");
  }

  render() {
    const today = new Date();
    return html`<h2>${this.reschedule ? "Reschedule" : "Find free time"}</h2>
      ${this.reschedule ? html`<p>Moving the visit of ${longDay(new Date(this.reschedule.start))}
        ${hhmm(new Date(this.reschedule.start))}. <button type="button"
        @click=${() => { this.reschedule = null; }}>Stop rescheduling</button></p>` : ""}
      <form @submit=${this.find}>
        <label>Visit type
          <select name="visit">
            <option value="">Any</option>
            ${this.visitTypes.map((v) => html`<option value=${v.token}>${v.label}</option>`)}
          </select></label>
        <label>Patient
          <input name="patient-search" type="search" autocomplete="off"
            placeholder="Family or given name" @input=${this.searchPatients}></label>
        ${this.patients.length ? html`<ul aria-label="Patients found">${this.patients.map((p) =>
          html`<li><span>${p.name} ${p.birthDate || ""}</span><button type="button"
            @click=${() => { this.patient = p; this.patients = []; }}>Choose ${p.name}</button>
            </li>`)}</ul>` : ""}
        <p aria-live="polite">${this.patient ? html`Patient: <strong>${this.patient.name}</strong>`
          : "No patient chosen"}</p>
        <label>Practitioner
          <select name="practitioner">
            <option value="">Any</option>
            ${this.practitioners.map((p) => html`<option value=${p.ref}>${p.name}</option>`)}
          </select></label>
        <div class="row">
          <label>From <input name="from" type="date" required value=${isoDate(today)}></label>
          <label>To <input name="to" type="date" required value=${isoDate(addDays(today, 14))}>
          </label>
          <label>Time of day <select name="timing">
            <option value="any">Any</option><option value="morning">Morning</option>
            <option value="afternoon">Afternoon</option></select></label>
        </div>
        <button class="primary" type="submit" ?disabled=${this.busy}>Find</button>
      </form>
      ${notice(this.message)}
      <ul aria-label="Free times">${this.options.map((o) => html`<li>
        <span>${longDay(new Date(o.start))}, ${hhmm(new Date(o.start))}–${hhmm(new Date(o.end))}
          · ${this.actors(o)}</span>
        ${this.reschedule ? "" : html`<button type="button" ?disabled=${this.busy}
          @click=${() => this.act(o, "hold")}>Hold ${hhmm(new Date(o.start))}</button>`}
        <button type="button" class="primary" ?disabled=${this.busy}
          @click=${() => this.act(o, "book")}>${this.reschedule ? "Move here" : "Book"}
          ${hhmm(new Date(o.start))}</button></li>`)}</ul>`;
  }
}

customElements.define("fs-find", Find);
