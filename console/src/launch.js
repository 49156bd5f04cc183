// The EHR launch entry: the EHR opens launch.html?iss=...&launch=...; fhirclient takes it
// from there (authorize with the launch context, then back to the console).
import { launch } from "./api.js";

launch().catch((err) => {
  document.querySelector("main").textContent = `Launch failed: ${err.message || err}`;
});
