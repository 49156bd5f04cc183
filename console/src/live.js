// Live updates through the server's websocket Subscriptions (Subscriptions Backport, R4): one
// id-only Subscription per appointment topic and for freed slots, bound on one socket. Every
// event-notification (another desk, an SIU feed, the server's own jobs) calls ``onChange`` at
// once. The Subscriptions are this page's: made when it opens, deleted when it goes. If the
// socket drops, it binds again with fresh tokens; the console also reads the history now and
// then for what no topic reports (blocked time), and every few seconds while the socket is down.
const TOPIC = "https://fhir-sched.org/fhir/SubscriptionTopic/";
const BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
const TOPICS = ["appointment-booked", "appointment-changed", "appointment-cancelled",
  "slot-freed", "waitlist-offer"];

function subscription(topic) {
  return {
    resourceType: "Subscription", status: "requested",
    reason: "fhir-sched front-desk console: live calendar", criteria: TOPIC + topic,
    channel: { type: "websocket", payload: "application/fhir+json",
      _payload: { extension: [{ url: `${BACKPORT}backport-payload-content`,
        valueCode: "id-only" }] } },
  };
}

function param(parameters, name) {
  const p = (parameters.parameter || []).find((x) => x.name === name);
  return p && (p.valueString ?? p.valueUrl ?? p.valueUri ?? p.valueDateTime);
}

export class Live {
  constructor(fhir, onChange, onState) {
    this.fhir = fhir;
    this.onChange = onChange;
    this.onState = onState || (() => {});
    this.ids = [];
    this.socket = null;
    this.stopped = false;
  }

  async subscriptions() {
    const made = [];
    for (const topic of TOPICS) {
      made.push((await this.fhir.post("Subscription", subscription(topic))).id);
    }
    return made;
  }

  async start() {
    this.ids = await this.subscriptions();
    window.addEventListener("pagehide", () => this.stop(true));
    await this.connect();
  }

  async connect() {
    if (this.stopped) return;
    const bindings = await Promise.all(this.ids.map((id) =>
      this.fhir.get(`Subscription/${id}/$get-ws-binding-token`)));
    const socket = new WebSocket(param(bindings[0], "websocket-url"));
    this.socket = socket;
    socket.onopen = () => {
      for (const b of bindings) socket.send(`bind-with-token ${param(b, "token")}`);
      this.onState("live");
    };
    socket.onmessage = (message) => {
      let bundle = null;
      try {
        bundle = JSON.parse(message.data);
      } catch {
        return;
      }
      const status = bundle && (bundle.entry || [])[0] && bundle.entry[0].resource;
      const kind = status && (status.type || (status.parameter || []).find((p) =>
        p.name === "type")?.valueCode);
      if (kind === "event-notification") this.onChange();
    };
    socket.onclose = () => {
      if (this.socket !== socket || this.stopped) return;
      this.onState("reconnecting");
      setTimeout(() => this.connect().catch(() => this.onState("polling")), 5000);
    };
  }

  /** Closes the socket; as the page goes, deletes the tab's Subscriptions too (keepalive
   * requests outlive the page). */
  stop(leaving = false) {
    this.stopped = true;
    if (this.socket) this.socket.close();
    if (!leaving) return;
    const headers = {};
    if (this.fhir.smart) {
      headers.authorization = `Bearer ${this.fhir.smart.state.tokenResponse.access_token}`;
    }
    for (const id of this.ids) {
      fetch(this.fhir.url(`Subscription/${id}`), { method: "DELETE", keepalive: true, headers });
    }
  }
}
