"""A subscriber endpoint for scripts/api-fuzz.sh: answers Graph's validation handshake (echoes the
validationToken as text/plain) and accepts every notification with 202. Plain HTTP on 127.0.0.1; the server
under test runs with notification_allow_http and notification_allow_internal for it."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        token = parse_qs(urlparse(self.path).query).get("validationToken")
        if token:
            answer = token[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        else:
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, format, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
