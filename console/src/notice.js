// The one way a screen says what an action did: a status when it worked, an alert (the
// server's words) when it did not, in a live region screen readers announce.
import { css, html } from "lit";

export const noticeStyles = css`
  .message { padding: 6px; border-radius: 4px; background: #fff4dc; color: #3d2b00; }
  .message.ok { background: #e7f5ea; color: #123d1c; }
`;

/** ``message``: {ok, text} or null. */
export function notice(message) {
  return html`<div aria-live="polite">${message ? html`<p class="message ${message.ok ? "ok"
    : ""}" role=${message.ok ? "status" : "alert"}>${message.text}</p>` : ""}</div>`;
}
