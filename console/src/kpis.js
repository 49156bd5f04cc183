// <fs-kpis>: the server's KPI Measures, evaluated with Measure/$evaluate-measure and charted
// with Chart.js (loaded only when this view opens): the trend of one measure by week, and a
// comparison across practitioners, locations or services; every figure also as a table and a
// CSV download.
import { LitElement, css, html } from "lit";
import {
  BarController, BarElement, CategoryScale, Chart, Legend, LineController, LineElement,
  LinearScale, PointElement, Tooltip,
} from "chart.js";
import { addDays, fromDateInput, isoDate } from "./time.js";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, LineController,
  LineElement, PointElement, Tooltip, Legend);

const BY = [["week", "Week"], ["practitioner", "Practitioner"], ["location", "Location"],
  ["service", "Service"]];

function score(x) {
  if (!x) return null;
  if (x.value !== undefined) return x.value;
  return null;
}

export class Kpis extends LitElement {
  static properties = {
    fhir: { attribute: false },
    resources: { attribute: false }, // the console's calendars, to name strata
    measures: { state: true },
    report: { state: true },
    rows: { state: true },
    message: { state: true },
    busy: { state: true },
  };

  static styles = css`
    form { display: flex; gap: 0.5rem; flex-wrap: wrap; align-items: end; }
    label { display: grid; gap: 2px; font-weight: 600; }
    select, input, button { font: inherit; padding: 4px 8px; }
    table { border-collapse: collapse; margin-top: 0.5rem; }
    th, td { border: 1px solid #c8ccd0; padding: 3px 8px; text-align: left; }
    .chart { position: relative; height: 320px; max-width: 56rem; }
    .message { padding: 6px; background: #fff4dc; color: #3d2b00; border-radius: 4px; }
  `;

  constructor() {
    super();
    this.measures = [];
    this.resources = [];
    this.rows = [];
    this.report = null;
    this.message = null;
    this.busy = false;
  }

  // Loaded once ``fhir`` arrives: this element is defined after it is created (its module
  // loads on first use), so its properties are only set by its first update.
  updated(changed) {
    if (changed.has("fhir") && this.fhir) this.loadMeasures();
  }

  async loadMeasures() {
    try {
      const { resources } = await this.fhir.searchAll("Measure", {}, 100);
      this.measures = resources;
    } catch (err) {
      this.message = err.message;
    }
  }

  async evaluate(ev) {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const id = form.get("measure");
    const by = form.get("by");
    const start = fromDateInput(form.get("from"));
    const end = addDays(fromDateInput(form.get("to")), 1);
    this.busy = true;
    this.message = null;
    try {
      const report = await this.fhir.get(`Measure/${id}/$evaluate-measure`, {
        periodStart: isoDate(start), periodEnd: isoDate(addDays(end, -1)),
        reportType: "population" });
      this.report = report;
      this.rows = this.strata(report, by);
      this.by = by;
      await this.updateComplete;
      this.draw();
    } catch (err) {
      this.message = err.message;
      this.rows = [];
    } finally {
      this.busy = false;
    }
  }

  strata(report, by) {
    const group = (report.group || [])[0] || {};
    const wanted = (s) => JSON.stringify(s.code || []).toLowerCase().includes(by);
    const stratifier = (group.stratifier || []).find(wanted);
    const names = Object.fromEntries((this.resources || []).map((r) => [r.ref, r.name]));
    const denominator = (pops) => {
      const d = (pops || []).find((p) => JSON.stringify(p.code || {}).includes("denominator"));
      return (d || (pops || [])[0] || {}).count;
    };
    if (!stratifier) {
      return [{ label: "All", value: score(group.measureScore),
        count: denominator(group.population) }];
    }
    return (stratifier.stratum || []).map((s) => {
      const key = (s.value && (s.value.text || ((s.value.coding || [])[0] || {}).code)) || "?";
      return { label: names[key] || key, value: score(s.measureScore),
        count: denominator(s.population) };
    }).sort((a, b) => a.label.localeCompare(b.label));
  }

  draw() {
    const canvas = this.shadowRoot.querySelector("canvas");
    if (!canvas) return;
    if (this.chart) this.chart.destroy();
    const trend = this.by === "week";
    this.chart = new Chart(canvas, {
      type: trend ? "line" : "bar",
      data: { labels: this.rows.map((r) => r.label), datasets: [{
        label: this.title(), data: this.rows.map((r) => r.value),
        borderColor: "#1e3a8a", backgroundColor: trend ? "#1e3a8a" : "#93a8d8" }] },
      options: { responsive: true, maintainAspectRatio: false, animation: false },
    });
  }

  title() {
    const m = this.measures.find((x) => this.report && this.report.measure &&
      this.report.measure.startsWith(x.url || "\u0000"));
    return m ? (m.title || m.name) : "Score";
  }

  csv() {
    const lines = [["stratum", "score", "denominator"], ...this.rows.map((r) =>
      [r.label, r.value ?? "", r.count ?? ""])];
    const text = lines.map((l) => l.map((v) => `"${String(v).replace(/"/g, '""')}"`).join(","))
      .join("\r\n");
    return URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  }

  render() {
    const today = new Date();
    return html`<h2>KPIs</h2>
      <form @submit=${this.evaluate}>
        <label>Measure <select name="measure" required>${this.measures.map((m) =>
          html`<option value=${m.id}>${m.title || m.name || m.id}</option>`)}</select></label>
        <label>By <select name="by">${BY.map(([v, w]) =>
          html`<option value=${v}>${w}</option>`)}</select></label>
        <label>From <input type="date" name="from" value=${isoDate(addDays(today, -90))}
          required></label>
        <label>To <input type="date" name="to" value=${isoDate(today)} required></label>
        <button type="submit" ?disabled=${this.busy || !this.measures.length}>Show</button>
      </form>
      ${this.message ? html`<p class="message" role="alert">${this.message}</p>` : ""}
      ${this.rows.length ? html`<div class="chart"><canvas role="img"
          aria-label=${`${this.title()} by ${this.by}`}></canvas></div>
        <table><caption>${this.title()}</caption><thead><tr><th scope="col">${this.by}</th>
          <th scope="col">Score</th><th scope="col">Denominator</th></tr></thead><tbody>
          ${this.rows.map((r) => html`<tr><td>${r.label}</td><td>${r.value ?? "—"}</td>
            <td>${r.count ?? ""}</td></tr>`)}</tbody></table>
        <p><a href=${this.csv()} download="kpi.csv">Download CSV</a></p>` : ""}`;
  }
}

customElements.define("fs-kpis", Kpis);
