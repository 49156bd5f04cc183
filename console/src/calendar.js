// What a calendar shows, read through the FHIR API: the Appointments of the chosen resources
// in the range (with their patients), and the blocked time on their Schedules (busy Slots).
import { EXT, extension, name, refOf } from "./api.js";
import { instant } from "./time.js";

const KIND = {
  booked: "booked", pending: "held", arrived: "arrived", "checked-in": "arrived",
  fulfilled: "arrived", noshow: "noshow", waitlist: "waitlist", proposed: "held",
};

export const KIND_WORDS = {
  booked: "Booked", held: "Held", arrived: "Arrived", noshow: "No-show", waitlist: "Waitlist",
  blocked: "Blocked", flagged: "Flagged", offer: "Offer",
};

export function kindOf(appt) {
  if (extension(appt, EXT + "booking-flag").length) return "flagged";
  if (appt.status === "pending" && extension(appt, EXT + "waitlist-offer").length) return "offer";
  return KIND[appt.status] || "booked";
}

/** Entries for ``resources`` (references) over [from, to). */
export async function load(fhir, resources, from, to) {
  if (!resources.length) return [];
  const entries = [];
  const chunks = [];
  for (let i = 0; i < resources.length; i += 50) chunks.push(resources.slice(i, i + 50));
  const wanted = new Set(resources);
  await Promise.all(chunks.map(async (chunk) => {
    const { resources: appts, included } = await fhir.searchAll("Appointment", {
      actor: chunk.join(","), date: [`ge${instant(from)}`, `lt${instant(to)}`],
      status: "booked,pending,arrived,checked-in,fulfilled,noshow,proposed",
      _include: "Appointment:patient",
    });
    for (const appt of appts) {
      if (!appt.start) continue;
      const patient = (appt.participant || []).map((p) => p.actor && p.actor.reference)
        .find((r) => r && r.startsWith("Patient/"));
      const who = patient ? name(included[patient]) || patient : "";
      for (const p of appt.participant || []) {
        const ref = p.actor && p.actor.reference;
        if (!ref || !wanted.has(ref)) continue;
        entries.push({
          key: `${appt.id}|${ref}`, id: appt.id, appointment: appt, resource: ref,
          start: new Date(appt.start), end: new Date(appt.end || appt.start),
          kind: kindOf(appt), label: who || (appt.description || "Appointment"), patient,
        });
      }
    }
    const { resources: schedules } = await fhir.searchAll("Schedule", { actor: chunk.join(",") });
    if (!schedules.length) return;
    const owner = {};
    for (const s of schedules) {
      owner[refOf(s)] = (s.actor || []).map((a) => a.reference).filter((r) => wanted.has(r));
    }
    const { resources: slots } = await fhir.searchAll("Slot", {
      schedule: Object.keys(owner).join(","), status: "busy-unavailable",
      start: `lt${instant(to)}`, end: `gt${instant(from)}`,
    });
    for (const slot of slots) {
      for (const ref of owner[slot.schedule.reference] || []) {
        entries.push({
          key: `${slot.id}|${ref}`, id: slot.id, slot, resource: ref,
          start: new Date(slot.start), end: new Date(slot.end), kind: "blocked",
          label: slot.comment || "Blocked",
        });
      }
    }
  }));
  entries.sort((a, b) => a.start - b.start || a.key.localeCompare(b.key));
  return entries;
}
