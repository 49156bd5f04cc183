// <fhir-sched-booking>: the patient booking widget a clinic puts on its own site.
//
//   <script src="https://fhir.clinic.example/widget/booking.js" defer></script>
//   <fhir-sched-booking fhir="https://fhir.clinic.example/fhir" client-id="clinic-site"
//     service="HealthcareService/derm" location="Location/main"></fhir-sched-booking>
//
// Open times come from the public view of $find (no login, no patient data); booking happens
// after a SMART standalone patient login with PKCE (npm fhirclient), back on the same page,
// with one $book for the signed-in patient. A visit type the clinic books only by phone
// (visit-type selfBooking false) shows its phone number instead. Shadow DOM keeps the
// clinic's styles out and ours in.
import FHIR from "fhirclient";
import { LitElement, css, html } from "lit";

const EXT = "https://fhir-sched.org/fhir/StructureDefinition/";
const PENDING = "fhir-sched-booking-pending";
const SCOPE = "openid fhirUser launch/patient patient/Appointment.cru patient/Patient.r";

function sub(ext, url) {
  return (ext.extension || []).find((x) => x.url === url);
}

function visitTypes(service) {
  return (service.extension || []).filter((e) => e.url === EXT + "visit-type").map((vt) => {
    const code = (sub(vt, "code") || {}).valueCoding || {};
    const online = sub(vt, "selfBooking");
    return { token: code.system ? `${code.system}|${code.code}` : code.code,
      label: code.display || code.code, online: !online || online.valueBoolean !== false };
  });
}

function phoneOf(...resources) {
  for (const r of resources) {
    const t = ((r && r.telecom) || []).find((x) => x.system === "phone" && x.value);
    if (t) return t.value;
  }
  return null;
}

const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric",
  month: "long" });
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

export class Booking extends LitElement {
  static properties = {
    fhir: { type: String },
    service: { type: String },
    location: { type: String },
    clientId: { type: String, attribute: "client-id" },
    visitType: { type: String, attribute: "visit-type" },
    days: { type: Number },
    state: { state: true },
  };

  static styles = css`
    :host { display: block; font-family: system-ui, sans-serif; color: #111;
      max-width: 40rem; }
    h2 { font-size: 1.2rem; margin: 0 0 0.5rem; }
    h3 { font-size: 1rem; margin: 0.75rem 0 0.25rem; }
    ul { list-style: none; display: flex; flex-wrap: wrap; gap: 0.4rem; padding: 0; margin: 0; }
    button { font: inherit; padding: 6px 10px; border-radius: 4px; border: 1px solid #1e3a8a;
      background: #fff; color: #1e3a8a; cursor: pointer; }
    button[aria-pressed="true"], button.primary { background: #1e3a8a; color: #fff; }
    button:focus-visible { outline: 3px solid #f59e0b; outline-offset: 2px; }
    .note { padding: 0.5rem; border-radius: 4px; background: #eef1f4; }
    .ok { background: #e7f5ea; color: #123d1c; }
    .bad { background: #fbe7e7; color: #5c1010; }
  `;

  constructor() {
    super();
    this.days = 14;
    this.state = { step: "loading" };
  }

  get base() {
    return (this.fhir || "").replace(/\/$/, "");
  }

  async json(path, init = {}, token = null) {
    const headers = { accept: "application/fhir+json", ...(init.headers || {}) };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(`${this.base}/${path}`, { ...init, headers });
    const body = await res.json().catch(() => null);
    const outcome = body && (body.resourceType === "OperationOutcome" ? body
      : body.resourceType === "Bundle" && (body.entry || []).length === 1 &&
        body.entry[0].resource.resourceType === "OperationOutcome" ? body.entry[0].resource
        : null);
    if (!res.ok || (outcome && outcome.issue.some((i) => ["error", "fatal"].includes(
      i.severity)))) {
      const words = ((outcome && outcome.issue) || []).map((i) => i.diagnostics).filter(Boolean)
        .join(" ");
      throw new Error(words || `HTTP ${res.status}`);
    }
    return body;
  }

  async connectedCallback() {
    super.connectedCallback();
    try {
      if (sessionStorage.getItem(PENDING) && new URLSearchParams(location.search).has("code")) {
        await this.finish();
        return;
      }
      await this.loadTimes();
    } catch (err) {
      this.state = { step: "error", text: err.message };
    }
  }

  async loadTimes() {
    const [service, place] = await Promise.all([
      this.json(this.service), this.location ? this.json(this.location) : null]);
    const types = visitTypes(service);
    const vt = types.find((t) => t.token === this.visitType || t.label === this.visitType) ||
      types[0];
    const phone = phoneOf(service, place);
    if (!vt) {
      this.state = { step: "phone", service, phone, text: "Online booking is not set up." };
      return;
    }
    if (!vt.online) {
      this.state = { step: "phone", service, phone, vt };
      return;
    }
    const now = new Date();
    const params = new URLSearchParams({ start: now.toISOString(),
      end: new Date(now.getTime() + this.days * 864e5).toISOString(), "visit-type": vt.token,
      _count: "30" });
    if (this.location) params.set("location-reference", this.location);
    const bundle = await this.json(`Appointment/$find?${params}`);
    const options = (bundle.entry || []).map((e) => e.resource)
      .filter((r) => r && r.resourceType === "Appointment");
    this.state = { step: "times", service, place, vt, phone, options, chosen: null };
  }

  choose(option) {
    this.state = { ...this.state, chosen: option };
  }

  async signIn() {
    sessionStorage.setItem(PENDING, JSON.stringify(this.state.chosen));
    await FHIR.oauth2.authorize({ clientId: this.clientId, scope: SCOPE, iss: this.base,
      redirectUri: location.href.split("?")[0], pkceMode: "required" });
  }

  async finish() {
    this.state = { step: "booking" };
    const client = await FHIR.oauth2.ready();
    const proposal = JSON.parse(sessionStorage.getItem(PENDING));
    sessionStorage.removeItem(PENDING);
    history.replaceState(null, "", location.pathname);
    const patient = client.patient.id;
    proposal.participant = [...(proposal.participant || []).filter((p) => !(p.actor &&
      (p.actor.reference || "").startsWith("Patient/"))),
    { actor: { reference: `Patient/${patient}` }, status: "accepted" }];
    try {
      const bundle = await this.json("Appointment/$book", {
        method: "POST", headers: { "content-type": "application/fhir+json" },
        body: JSON.stringify({ resourceType: "Parameters", parameter: [
          { name: "appt-resource", resource: proposal }] }),
      }, client.state.tokenResponse.access_token);
      const appt = (bundle.entry || []).map((e) => e.resource)
        .find((r) => r && r.resourceType === "Appointment");
      this.state = { step: "booked", appt };
    } catch (err) {
      this.state = { step: "error", text: `Not booked: ${err.message}` };
    }
  }

  renderTimes() {
    const { options, chosen, service, vt } = this.state;
    const byDay = new Map();
    for (const o of options) {
      const day = dayFmt.format(new Date(o.start));
      if (!byDay.has(day)) byDay.set(day, []);
      byDay.get(day).push(o);
    }
    return html`<h2>Book ${vt.label} · ${service.name || ""}</h2>
      ${options.length ? [...byDay].map(([day, list]) => html`<h3>${day}</h3>
        <ul>${list.map((o) => html`<li><button aria-pressed=${chosen === o}
          @click=${() => this.choose(o)}>${timeFmt.format(new Date(o.start))}</button></li>`)}
        </ul>`) : html`<p class="note">No open times in the next ${this.days} days.
          ${this.state.phone ? `Call ${this.state.phone}.` : ""}</p>`}
      ${chosen ? html`<p><button class="primary" @click=${this.signIn}>Sign in to book
        ${dayFmt.format(new Date(chosen.start))}, ${timeFmt.format(new Date(chosen.start))}
        </button></p>` : ""}`;
  }

  render() {
    const s = this.state;
    switch (s.step) {
      case "loading": return html`<p aria-live="polite">Loading open times…</p>`;
      case "booking": return html`<p aria-live="polite">Booking…</p>`;
      case "times": return this.renderTimes();
      case "phone": return html`<h2>${(s.vt && s.vt.label) || (s.service && s.service.name) ||
        "Booking"}</h2><p class="note" role="status">${s.text || "This visit is booked by phone."}
        ${s.phone ? html` Call <a href="tel:${s.phone}">${s.phone}</a>.` : ""}</p>`;
      case "booked": return html`<p class="note ok" role="status">Booked for
        ${dayFmt.format(new Date(s.appt.start))}, ${timeFmt.format(new Date(s.appt.start))}.
        </p>`;
      default: return html`<p class="note bad" role="alert">${s.text}</p>`;
    }
  }
}

customElements.define("fhir-sched-booking", Booking);
