// Reads an .ics file with ical.js and prints what it understood, as JSON, for tests/test_ics.py.
// Usage: node read.mjs calendar.ics
import { readFileSync } from "node:fs";
import ICAL from "ical.js";

const root = new ICAL.Component(ICAL.parse(readFileSync(process.argv[2], "utf8")));
// Only the calendar's own VTIMEZONEs: a TZID that resolves proves the file carries its zone.
for (const vtimezone of root.getAllSubcomponents("vtimezone")) {
  ICAL.TimezoneService.register(vtimezone);
}
const events = root.getAllSubcomponents("vevent").map((vevent) => {
  const event = new ICAL.Event(vevent);
  return {
    uid: event.uid,
    summary: event.summary,
    status: vevent.getFirstPropertyValue("status"),
    sequence: event.sequence,
    start_utc: event.startDate.toJSDate().toISOString(),
    end_utc: event.endDate.toJSDate().toISOString(),
    tzid: event.startDate.zone.tzid,
    location: event.location,
    description: event.description,
  };
});
console.log(JSON.stringify({ method: root.getFirstPropertyValue("method"), events }));
