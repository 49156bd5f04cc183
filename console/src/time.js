// Dates in the browser's own zone: the desk's wall clock.
export const DAY = 24 * 3600 * 1000;

export function startOfDay(d) {
  const x = new Date(d);
  x.setHours(0, 0, 0, 0);
  return x;
}

export function addDays(d, n) {
  const x = new Date(d);
  x.setDate(x.getDate() + n);
  return x;
}

export function startOfWeek(d) {
  const x = startOfDay(d);
  const shift = (x.getDay() + 6) % 7; // Monday first
  return addDays(x, -shift);
}

export function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() &&
    a.getDate() === b.getDate();
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric",
  month: "short" });
const longFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric",
  month: "long", year: "numeric" });

export const hhmm = (d) => timeFmt.format(d);
export const dayLabel = (d) => dayFmt.format(d);
export const longDay = (d) => longFmt.format(d);

/** An instant with this zone's offset, as FHIR wants it (to the second). */
export function instant(d) {
  const pad = (n) => String(Math.abs(n)).padStart(2, "0");
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:` +
    `${pad(d.getMinutes())}:${pad(d.getSeconds())}${sign}${pad(Math.trunc(off / 60))}:` +
    `${pad(off % 60)}`;
}

/** yyyy-mm-dd of a local date (for date inputs). */
export function isoDate(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

export function fromDateInput(value, time = "00:00") {
  const [y, m, d] = value.split("-").map(Number);
  const [hh, mm] = time.split(":").map(Number);
  return new Date(y, m - 1, d, hh, mm, 0, 0);
}
