"""The authorize step's pages: plain HTML forms that work without JavaScript.

Every value is escaped; the pages are served with a Content-Security-Policy that allows no
script at all and no framing (a consent page inside someone else's frame is a clickjacking
target).
"""

from __future__ import annotations

from html import escape

from ..scopes import parse_scope

CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;"
          "line-height:1.5}label{display:block;margin:.6rem 0}input[type=text],"
          "input[type=password]{width:100%;padding:.4rem;font-size:1rem}button{font-size:1rem;"
          "padding:.4rem 1.2rem;margin-right:.6rem}.error{color:#a00}code{font-size:.9em}")
_LETTERS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
_OTHER = {
    "openid": "know who you are", "fhirUser": "know which record is yours or who you are",
    "profile": "know who you are", "offline_access": "keep access after you close the app",
    "online_access": "keep access while you are signed in", "launch": "open with the record "
    "the EHR has open", "launch/patient": "choose which patient's record to open",
}


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
            f"content='width=device-width,initial-scale=1'><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><main><h1>{escape(title)}</h1>{body}</main>"
            "</body></html>")


def describe(scope: str) -> str:
    """Human words for a scope: what the app may do with which data."""
    parsed = parse_scope(scope)
    if parsed is None:
        return _OTHER.get(scope, scope)
    verbs = ", ".join(v for k, v in _LETTERS.items() if k in parsed.letters)
    what = "all kinds of records" if parsed.type == "*" else f"{parsed.type} records"
    whose = {"patient": "of the patient in context", "user": "you can access",
             "system": "on this server"}[parsed.level]
    extra = f" where {'&'.join(f'{k}={v}' for k, v in parsed.where)}" if parsed.where else ""
    return f"{verbs} {what} {whose}{extra}"


def login(pending: str, app: str, error: str | None = None) -> str:
    warn = f"<p class=error role=alert>{escape(error)}</p>" if error else ""
    return _page("Sign in", f"""{warn}<p><b>{escape(app)}</b> asks to connect to your records.
<form method=post action="/auth/login">
<input type=hidden name=pending value="{escape(pending)}">
<label>Username <input type=text name=username autocomplete=username required autofocus></label>
<label>Password <input type=password name=password autocomplete=current-password required>
</label><button type=submit>Sign in</button></form>""")


def consent(pending: str, app: str, who: str, scopes: list[str], pick_patient: bool) -> str:
    items = "".join(
        f"<label><input type=checkbox name=scope value=\"{escape(s)}\" checked> "
        f"{escape(describe(s))} <code>{escape(s)}</code></label>" for s in scopes)
    picker = ("<label>Patient (id or Patient/id) <input type=text name=patient required>"
              "</label>" if pick_patient else "")
    return _page("Allow access?", f"""<p>Signed in as <b>{escape(who)}</b>.
<b>{escape(app)}</b> asks to:</p>
<form method=post action="/auth/consent">
<input type=hidden name=pending value="{escape(pending)}">
<fieldset><legend>Untick what you do not want to share</legend>{items}</fieldset>
{picker}<p><button type=submit name=decision value=allow>Allow</button>
<button type=submit name=decision value=deny formnovalidate>Deny</button></p></form>""")


def error(message: str) -> str:
    return _page("Cannot continue", f"<p class=error role=alert>{escape(message)}</p>")


def page(title: str, body_html: str) -> str:
    """A page in the same plain style for other doors' forms (a message's signed link);
    ``body_html`` must be escaped by the caller."""
    return _page(title, body_html)
