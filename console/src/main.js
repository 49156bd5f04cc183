// The console's entry point.
import "./console.js";
