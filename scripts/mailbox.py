#!/usr/bin/env python3
"""Mail catcher for tests: SMTP with required STARTTLS and AUTH (PLAIN/LOGIN).

Caught messages are kept in memory and served over HTTP in the JSON shape of
maildev's REST API (GET /email, GET /email/:id, DELETE /email/all, ...).
maildev itself cannot do this: it hard-codes `hideSTARTTLS` in its SMTP server.
"""

import argparse
import asyncio
import datetime
import email
import email.policy
import email.utils
import hmac
import json
import logging
import secrets
import signal
import ssl
import string
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

log = logging.getLogger("mailbox")
ID_CHARS = string.ascii_letters + string.digits


class Store:
    """Thread-safe list of caught messages (oldest first)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items = []  # (json dict, raw bytes)

    def add(self, item, raw):
        with self._lock:
            self._items.append((item, raw))

    def all(self):
        with self._lock:
            return [item for item, _ in self._items]

    def get(self, msg_id):
        with self._lock:
            for item, raw in self._items:
                if item["id"] == msg_id:
                    return item, raw
        return None, None

    def delete(self, msg_id):
        with self._lock:
            before = len(self._items)
            self._items = [(i, r) for i, r in self._items if i["id"] != msg_id]
            return len(self._items) != before

    def clear(self):
        with self._lock:
            self._items = []


def human_size(size):
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "bytes" else f"{round(size, 2)} {unit}"
        size /= 1024
    return f"{size} bytes"


def address_list(msg, name):
    """Addresses of header `name` as maildev's [{address, name}]."""
    values = msg.get_all(name) or []
    try:
        out = []
        for header in values:
            for addr in getattr(header, "addresses", ()):
                out.append({"address": addr.addr_spec, "name": addr.display_name or ""})
        return out
    except Exception:  # malformed header: fall back to the lenient parser
        pairs = email.utils.getaddresses([str(v) for v in values])
        return [{"address": a, "name": n} for n, a in pairs if a]


def body_of(msg, subtype):
    part = msg.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        return part.get_content()
    except Exception:
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace")


def to_json(raw, envelope, session):
    # LF line endings in text/html, like maildev.
    msg = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    now = datetime.datetime.now(datetime.timezone.utc)
    item = {}
    html = body_of(msg, "html")
    text = body_of(msg, "plain")
    if html is not None:
        item["html"] = html
    if text is not None:
        item["text"] = text
    item["headers"] = {k.lower(): str(v) for k, v in msg.items()}
    item["subject"] = str(msg.get("subject", ""))
    if msg.get("message-id"):
        item["messageId"] = str(msg["message-id"]).strip("<>")
    item["priority"] = "normal"
    item["from"] = address_list(msg, "from")
    item["to"] = address_list(msg, "to")
    cc = address_list(msg, "cc")
    if cc:
        item["cc"] = cc
    if msg.get("date"):
        try:
            item["date"] = msg["date"].datetime.astimezone(datetime.timezone.utc).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
        except Exception:
            pass
    item["id"] = "".join(secrets.choice(ID_CHARS) for _ in range(8))
    item["time"] = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    item["read"] = False
    peer = session.peer[0] if session.peer else None
    item["envelope"] = {
        "from": {"address": envelope.mail_from, "args": False},
        "to": [{"address": r, "args": False} for r in envelope.rcpt_tos],
        "host": session.host_name,
        "remoteAddress": peer,
    }
    item["size"] = len(raw)
    item["sizeHuman"] = human_size(len(raw))
    attachments = []
    for part in msg.iter_attachments():
        payload = part.get_payload(decode=True) or b""
        attachments.append({
            "contentType": part.get_content_type(),
            "fileName": part.get_filename(),
            "generatedFileName": part.get_filename(),
            "contentId": str(part.get("content-id", "")).strip("<>") or None,
            "transferEncoding": part.get("content-transfer-encoding"),
            "length": len(payload),
        })
    item["attachments"] = attachments or None
    visible = {a["address"].lower() for a in item["to"] + cc}
    item["calculatedBcc"] = [
        {"address": r, "name": ""} for r in envelope.rcpt_tos if r.lower() not in visible
    ]
    return item


class Handler:
    def __init__(self, store):
        self.store = store

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        try:
            item = to_json(raw, envelope, session)
        except Exception:
            log.exception("cannot parse message")
            return "554 5.6.0 Cannot parse message"
        self.store.add(item, raw)
        log.info("caught %s from %s to %s: %r", item["id"], envelope.mail_from,
                 envelope.rcpt_tos, item["subject"])
        return "250 OK: message queued"


class Authenticator:
    def __init__(self, user, password):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and hmac.compare_digest(auth_data.login, self.user)
            and hmac.compare_digest(auth_data.password, self.password)
        )
        if not ok:
            log.info("AUTH %s failed", mechanism)
            # handled=False: aiosmtpd then answers 535 itself (its default,
            # handled=True, sends nothing and leaves the client hanging).
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data)


def lookup(obj, path):
    """maildev's dotted-path lookup (arrays map over their elements)."""
    head, _, rest = path.partition(".")
    base = obj.get(head) if isinstance(obj, dict) else None
    if not base:
        return None
    if not rest:
        return base
    if isinstance(base, list):
        return [lookup(el, rest) for el in base]
    return lookup(base, rest)


def matches(item, query):
    for key, want in query:
        value = lookup(item, key)
        if isinstance(value, list):
            if want not in value:
                return False
        elif value != want:
            return False
    return True


def make_http_handler(store):
    class Http(BaseHTTPRequestHandler):
        server_version = "mailbox"

        def log_message(self, fmt, *args):  # quiet: errors only
            pass

        def send_json(self, status, value):
            body = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def send_raw(self, status, body, ctype):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def parts(self):
            url = urlsplit(self.path)
            segs = [unquote(s) for s in url.path.strip("/").split("/") if s]
            return segs, parse_qsl(url.query)

        def not_found(self):
            self.send_json(404, {"error": "Email was not found"})

        def do_GET(self):
            segs, query = self.parts()
            if segs == ["healthz"]:
                return self.send_json(200, True)
            if segs == ["email"]:
                skip = 0
                rest = []
                for k, v in query:
                    if k == "skip":
                        skip = int(v) if v.isdigit() else 0
                    else:
                        rest.append((k, v))
                items = [i for i in store.all() if matches(i, rest)]
                return self.send_json(200, items[skip:])
            if len(segs) >= 2 and segs[0] == "email":
                item, raw = store.get(segs[1])
                if item is None:
                    return self.not_found()
                if len(segs) == 2:
                    item["read"] = True
                    return self.send_json(200, item)
                if segs[2:] == ["html"]:
                    return self.send_raw(200, (item.get("html") or "").encode(),
                                         "text/html; charset=utf-8")
                if segs[2:] in (["source"], ["download"]):
                    return self.send_raw(200, raw, "message/rfc822")
            self.send_json(404, {"error": "Not found"})

        def do_DELETE(self):
            segs, _ = self.parts()
            if segs == ["email", "all"]:
                store.clear()
                return self.send_json(200, True)
            if len(segs) == 2 and segs[0] == "email":
                if store.delete(segs[1]):
                    return self.send_json(200, True)
                return self.not_found()
            self.send_json(404, {"error": "Not found"})

        def do_PATCH(self):
            segs, _ = self.parts()
            if segs == ["email", "read-all"]:
                items = store.all()
                for item in items:
                    item["read"] = True
                return self.send_json(200, len(items))
            self.send_json(404, {"error": "Not found"})

    return Http


async def serve(args, store):
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(args.cert, args.key)
    handler = Handler(store)
    auth = Authenticator(args.user, args.password)
    loop = asyncio.get_running_loop()

    def factory():
        return SMTP(
            handler,
            hostname="localhost",
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=auth,
            enable_SMTPUTF8=True,
            loop=loop,
        )

    def implicit_factory():
        # The whole connection is TLS already (SMTPS): no STARTTLS to require.
        return SMTP(
            handler,
            hostname="localhost",
            auth_required=True,
            auth_require_tls=False,
            authenticator=auth,
            enable_SMTPUTF8=True,
            loop=loop,
        )

    servers = [await loop.create_server(factory, host=args.host, port=args.smtp_port)]
    log.info("SMTP (STARTTLS required, AUTH required) on %s:%d", args.host, args.smtp_port)
    if args.smtps_port:
        servers.append(
            await loop.create_server(implicit_factory, host=args.host, port=args.smtps_port, ssl=tls)
        )
        log.info("SMTPS (implicit TLS, AUTH required) on %s:%d", args.host, args.smtps_port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
        await server.wait_closed()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--smtp-port", type=int, required=True)
    p.add_argument("--web-port", type=int, required=True)
    p.add_argument("--smtps-port", type=int, default=0, help="also serve implicit TLS (SMTPS) here")
    p.add_argument("--cert", required=True, help="PEM server certificate chain")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--verbose", action="store_true", help="log every SMTP command")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.verbose:  # aiosmtpd logs every SMTP command at INFO
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    # aiosmtpd warns about its own use of a deprecated attribute on each AUTH.
    logging.getLogger("mail.log").addFilter(
        lambda rec: "login_data is deprecated" not in rec.getMessage())

    store = Store()
    ThreadingHTTPServer.request_queue_size = 128  # many parallel tests poll
    httpd = ThreadingHTTPServer((args.host, args.web_port), make_http_handler(store))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    log.info("HTTP mailbox on http://%s:%d", args.host, args.web_port)
    try:
        asyncio.run(serve(args, store))
    finally:
        httpd.shutdown()
        log.info("stopped")


if __name__ == "__main__":
    main()
