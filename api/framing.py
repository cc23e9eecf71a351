"""uvicorn's HTTP protocol with two limits of the API's own: JSON errors, and a bounded head.

A request that is not HTTP at all (a broken request line, a bad header, a malformed chunk)
never reaches the app: uvicorn answers 400 itself, in plain text. This protocol gives that
answer the API's shape, `{"detail": …}`.

uvicorn's httptools protocol also keeps a request's line and headers in memory for as long as
a client sends them: 100 MB of headers cost the server 100 MB. Here a head over
`MAX_HEAD_BYTES` is answered 431 and the connection closed, so a client can make the server
hold at most that much per connection before the body (which `api.guard` limits) starts.
Otherwise this is uvicorn's own httptools protocol.
"""

from __future__ import annotations

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 1 << 20
"""The most a request line and its headers may take (browsers send a few kB)."""


class JSONErrorsProtocol(HttpToolsProtocol):
    reading_head = True  # until the parser has the whole request line and headers
    head_bytes = 0  # bytes received since this request's head began

    def data_received(self, data: bytes) -> None:
        if self.reading_head:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self.send_error(431, f"request line and headers are over {MAX_HEAD_BYTES} bytes")
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self.reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.reading_head, self.head_bytes = True, 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        self.send_error(400, f"malformed HTTP request: {msg}")

    def send_error(self, status: int, detail: str) -> None:
        """Answer `status` with a JSON detail and close the connection."""
        body = orjson.dumps({"detail": detail})
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
