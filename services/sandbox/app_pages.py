"""The portal's pages around the application (pure HTML): the page that opens the application
in a frame with a POST (install page, application page, widgets), the ``BX24`` stub the
application's frame loads, and the error page of ``/oauth/authorize/``."""

from collections.abc import Mapping
from html import escape

BX24_JS = """\
/* The sandbox's stand-in for Bitrix24's BX24 library (api.bitrix24.com/api/v1/): what the
   application's frame calls reaches the portal page around it through postMessage. */
(function () {
  "use strict";
  var BX24 = window.BX24 || {};
  function tell(method, params) {
    window.parent.postMessage({sandbox: "bx24", method: method, params: params || {}}, "*");
  }
  BX24.init = function (callback) { if (callback) { window.setTimeout(callback, 0); } };
  BX24.installFinish = function () { tell("installFinish"); };
  BX24.fitWindow = function () {};
  BX24.resizeWindow = function () {};
  BX24.setTitle = function (title) { tell("setTitle", {title: String(title)}); };
  BX24.closeApplication = function () { tell("closeApplication"); };
  window.BX24 = BX24;
})();
"""
SCRIPT_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def frame_headers(nonce: str) -> dict[str, str]:
    """The portal page frames the application (any http(s) origin) and runs only its own
    script."""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline';"
            " frame-src http: https:; form-action http: https:; connect-src 'self'"
        ),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
    }


def frame_page(
    *,
    title: str,
    note: str,
    action: str,
    body: Mapping[str, str],
    finish_url: str,
    app_sid: str,
    nonce: str,
) -> str:
    """A portal page that POSTs ``body`` to ``action`` inside a frame, as Bitrix24 opens an
    application, and turns the frame's ``BX24.installFinish()`` into a POST to
    ``finish_url``."""
    inputs = "".join(
        f'<input type=hidden name="{escape(name)}" value="{escape(value)}">'
        for name, value in body.items()
    )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{escape(title)} · Bitrix24 sandbox</title>"
        f"<h1>{escape(title)}</h1><p>{escape(note)}</p>"
        f'<form id=launch method=post action="{escape(action)}" target=app>{inputs}</form>'
        '<iframe name=app id=app title="application"'
        ' style="width:100%;height:80vh;border:1px solid #bbb"></iframe>'
        "<p id=status role=status></p>"
        f"<script nonce={nonce}>"
        'document.getElementById("launch").submit();'
        'window.addEventListener("message", function (event) {'
        ' var frame = document.getElementById("app");'
        " if (event.source !== frame.contentWindow) { return; }"
        " var data = event.data || {};"
        ' if (data.sandbox !== "bx24" || data.method !== "installFinish") { return; }'
        f' fetch({_js(finish_url)}, {{method: "POST",'
        ' headers: {"Content-Type": "application/x-www-form-urlencoded"},'
        f' body: "APP_SID=" + encodeURIComponent({_js(app_sid)})}})'
        " .then(function (response) {"
        '  document.getElementById("status").textContent = response.ok'
        '   ? "Installed: BX24.installFinish() reached the portal."'
        '   : "installFinish failed: HTTP " + response.status; });'
        "});"
        "</script></html>"
    )


def error_page(title: str, message: str) -> str:
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{escape(title)} · Bitrix24 sandbox</title>"
        f"<h1>{escape(title)}</h1><p>{escape(message)}</p></html>"
    )


def _js(value: str) -> str:
    """A JavaScript string literal safe inside a <script> element."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\n", "\\n")
    )
    return f'"{escaped}"'
