// <fs-waitlist>: who waits (Appointments with status waitlist), the offers the server has made
// them (holds carrying the waitlist-offer extension), and the desk's actions: book an offer
// for the patient, or take an entry off the list.
import { LitElement, css, html } from "lit";
import { notice, noticeStyles } from "./notice.js";
import { EXT, extension, name } from "./api.js";
import { hhmm, longDay } from "./time.js";

export class Waitlist extends LitElement {
  static properties = {
    fhir: { attribute: false },
    entries: { state: true },
    offers: { state: true },
    message: { state: true },
  };

  static styles = [noticeStyles, css`
    table { border-collapse: collapse; width: 100%; }
    th, td { border-bottom: 1px solid #ddd; padding: 4px; text-align: left; vertical-align: top; }
    button { font: inherit; padding: 3px 8px; cursor: pointer; }
  `];

  constructor() {
    super();
    this.entries = [];
    this.offers = [];
    this.message = null;
  }

  async refresh() {
    const waiting = await this.fhir.searchAll("Appointment", { status: "waitlist",
      _include: "Appointment:patient" }, 1000);
    const pending = await this.fhir.searchAll("Appointment", { status: "pending",
      _include: "Appointment:patient" }, 1000);
    const names = { ...waiting.included, ...pending.included };
    const patientOf = (a) => (a.participant || []).map((p) => p.actor && p.actor.reference)
      .find((r) => r && r.startsWith("Patient/"));
    this.offers = pending.resources.filter((a) => extension(a, EXT + "waitlist-offer").length)
      .map((a) => ({ appt: a, patient: name(names[patientOf(a)]) || patientOf(a) || "" }));
    const offered = new Set(this.offers.map((o) => {
      const ext = extension(o.appt, EXT + "waitlist-offer")[0];
      const entry = (ext.extension || []).find((x) => x.url === "entry");
      return entry && entry.valueReference && entry.valueReference.reference;
    }));
    this.entries = waiting.resources.map((a) => ({ appt: a,
      patient: name(names[patientOf(a)]) || patientOf(a) || "",
      offered: offered.has(`Appointment/${a.id}`) }));
  }

  connectedCallback() {
    super.connectedCallback();
    if (this.fhir) this.refresh().catch((err) => { this.message = { text: err.message }; });
  }

  async act(words, write) {
    try {
      await write();
      this.message = { ok: true, text: words };
      await this.refresh();
      this.dispatchEvent(new CustomEvent("fs-changed", { bubbles: true, composed: true }));
    } catch (err) {
      this.message = { ok: false, text: err.message };
    }
  }

  bookOffer(offer) {
    return this.act(`Booked ${offer.patient}.`, () => this.fhir.post(
      `Appointment/${offer.appt.id}/$book`, { resourceType: "Parameters" }));
  }

  remove(entry) {
    return this.act(`${entry.patient} is off the waitlist.`, () => this.fhir.patch(
      `Appointment/${entry.appt.id}`, [{ op: "replace", path: "/status", value: "cancelled" }]));
  }

  wanted(a) {
    return (a.requestedPeriod || []).map((p) => `${p.start ? longDay(new Date(p.start)) : "any"}` +
      ` to ${p.end ? longDay(new Date(p.end)) : "any"}`).join("; ") || "any time";
  }

  render() {
    return html`<h2>Waitlist</h2>
      ${notice(this.message)}
      <h3>Live offers</h3>
      ${this.offers.length ? html`<table><thead><tr><th scope="col">Patient</th>
        <th scope="col">Offered time</th><th scope="col">Action</th></tr></thead><tbody>
        ${this.offers.map((o) => html`<tr><td>${o.patient}</td>
          <td>${longDay(new Date(o.appt.start))} ${hhmm(new Date(o.appt.start))}</td>
          <td><button @click=${() => this.bookOffer(o)}>Book offer for ${o.patient}</button>
          </td></tr>`)}</tbody></table>` : html`<p>No open offers.</p>`}
      <h3>Waiting</h3>
      ${this.entries.length ? html`<table><thead><tr><th scope="col">Patient</th>
        <th scope="col">Wants</th><th scope="col">Priority</th><th scope="col">Offer</th>
        <th scope="col">Action</th></tr></thead><tbody>
        ${this.entries.map((e) => html`<tr><td>${e.patient}</td><td>${this.wanted(e.appt)}</td>
          <td>${e.appt.priority ?? ""}</td><td>${e.offered ? "Offered" : "—"}</td>
          <td><button @click=${() => this.remove(e)}>Remove ${e.patient}</button></td></tr>`)}
        </tbody></table>` : html`<p>Nobody is waiting.</p>`}`;
  }
}

customElements.define("fs-waitlist", Waitlist);
