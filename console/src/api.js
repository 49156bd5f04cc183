// The console's one way to the server: the public FHIR API, with a SMART access token when
// the server has auth on. SMART login (standalone or EHR launch, PKCE) is npm fhirclient's:
// SMART's own library does the authorize and token steps; every request after that is a plain
// fetch with the token, so refusals come back as the server's OperationOutcome, in words.
import FHIR from "fhirclient";

export const EXT = "https://fhir-sched.org/fhir/StructureDefinition/";

export class FhirError extends Error {
  constructor(status, outcome, fallback) {
    const issues = (outcome && outcome.issue) || [];
    const words = issues.map((i) => i.diagnostics || (i.details && i.details.text) || i.code)
      .filter(Boolean);
    super(words.join(" ") || fallback || `HTTP ${status}`);
    this.status = status;
    this.issues = issues;
  }
}

/** An OperationOutcome inside a $book/$hold refusal Bundle (IHE shape) or on its own. */
function outcomeOf(body) {
  if (!body) return null;
  if (body.resourceType === "OperationOutcome") return body;
  if (body.resourceType === "Bundle") {
    const entry = (body.entry || []).find((e) => e.resource && e.resource.resourceType ===
      "OperationOutcome");
    return entry ? entry.resource : null;
  }
  return null;
}

export class Fhir {
  constructor(base, smart) {
    this.base = base.replace(/\/$/, "");
    this.smart = smart; // a fhirclient Client, or null when the server has auth off
  }

  /** What an EHR launch handed over: the patient open in the EHR and its fhirContext. */
  get context() {
    const t = (this.smart && this.smart.state.tokenResponse) || {};
    return { patient: t.patient ? `Patient/${t.patient}` : null,
      resources: (t.fhirContext || []).map((c) => c.reference).filter(Boolean) };
  }

  get user() {
    if (!this.smart) return null;
    try {
      return this.smart.getFhirUser() || null;
    } catch {
      return null;
    }
  }

  async headers(extra) {
    const h = { accept: "application/fhir+json", ...extra };
    if (this.smart) {
      await this.smart.refreshIfNeeded();
      h.authorization = `Bearer ${this.smart.state.tokenResponse.access_token}`;
    }
    return h;
  }

  url(path, params) {
    const u = new URL(path.startsWith("http") ? path : `${this.base}/${path.replace(/^\//, "")}`);
    for (const [k, v] of Object.entries(params || {})) {
      for (const one of Array.isArray(v) ? v : [v]) {
        if (one !== undefined && one !== null && one !== "") u.searchParams.append(k, one);
      }
    }
    return u.toString();
  }

  async request(method, path, { params, body, contentType } = {}) {
    const headers = await this.headers(body !== undefined ? {
      "content-type": contentType || "application/fhir+json" } : {});
    const res = await fetch(this.url(path, params), {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    const refusal = res.ok && json && json.resourceType === "Bundle" &&
      (json.entry || []).length === 1 && outcomeOf(json) &&
      outcomeOf(json).issue.some((i) => i.severity === "error" || i.severity === "fatal");
    if (!res.ok || refusal) throw new FhirError(res.status, outcomeOf(json), text.slice(0, 200));
    return json;
  }

  get(path, params) { return this.request("GET", path, { params }); }
  post(path, body) { return this.request("POST", path, { body }); }
  put(path, body) { return this.request("PUT", path, { body }); }
  patch(path, ops) {
    return this.request("PATCH", path, { body: ops, contentType: "application/json-patch+json" });
  }

  /** Every resource of a search, following next links up to ``limit``; includes by type. */
  async searchAll(type, params, limit = 5000) {
    const found = [];
    const included = {};
    let bundle = await this.get(type, { _count: 1000, ...params });
    while (bundle) {
      for (const e of bundle.entry || []) {
        const r = e.resource;
        if (!r) continue;
        if (e.search && e.search.mode === "include") {
          included[`${r.resourceType}/${r.id}`] = r;
        } else if (r.resourceType === type) {
          found.push(r);
        }
      }
      const next = (bundle.link || []).find((l) => l.relation === "next");
      if (!next || found.length >= limit) break;
      bundle = await this.get(next.url);
    }
    return { resources: found, included };
  }
}

/** Signs in as the server says (config.json): SMART when auth is on, straight in when off. */
export async function connect() {
  const config = await (await fetch("./config.json")).json();
  if (config.auth !== "smart") return new Fhir(config.fhirBase, null);
  const params = new URLSearchParams(location.search);
  if (params.has("code") || params.has("error") || sessionStorage.getItem("SMART_KEY")) {
    try {
      const client = await FHIR.oauth2.ready();
      history.replaceState(null, "", location.pathname + location.hash);
      return new Fhir(config.fhirBase, client);
    } catch (err) {
      sessionStorage.removeItem("SMART_KEY");
      if (params.has("error")) throw err;
    }
  }
  await FHIR.oauth2.authorize({
    clientId: config.clientId, scope: config.scope.replace(/\blaunch\b /, ""),
    iss: config.fhirBase, redirectUri: location.pathname, pkceMode: "required",
  });
  return new Promise(() => {}); // the page is leaving for the login
}

/** The EHR launch entry (launch.html?iss=...&launch=...). */
export async function launch() {
  const config = await (await fetch("./config.json")).json();
  await FHIR.oauth2.authorize({
    clientId: config.clientId, scope: config.scope, redirectUri: "./",
    pkceMode: "required",
  });
}

export function name(resource) {
  if (!resource) return "";
  if (resource.name && typeof resource.name === "string") return resource.name;
  const n = (resource.name || [])[0];
  if (!n) return resource.id;
  if (n.text) return n.text;
  return [...(n.prefix || []), ...(n.given || []), n.family].filter(Boolean).join(" ");
}

export function refOf(resource) {
  return `${resource.resourceType}/${resource.id}`;
}

export function extension(resource, url) {
  return (resource.extension || []).filter((e) => e.url === url);
}
