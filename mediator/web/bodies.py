"""Request bodies within `MEDIATOR_MAX_BODY_BYTES`, however the client frames them."""

from __future__ import annotations

import io
from typing import IO

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import cached_property


class BoundedRequest(Request):
    """A request whose streamed body (chunked, no Content-Length) over the limit is a 413, as
    one with a Content-Length is.

    werkzeug bounds such a body by the limit but stops reading *at* the limit without an error:
    a longer body was cut short silently, and the cut JSON answered 400 "not readable JSON".
    """

    @cached_property
    def stream(self) -> IO[bytes]:
        limit = self.max_content_length
        if self.content_length is None and limit is not None and self.environ.get("wsgi.input_terminated"):
            # The server ends the stream at the body's end (gunicorn decodes the chunks).
            body = self.input_stream.read(limit + 1)
            if len(body) > limit:
                raise RequestEntityTooLarge()
            return io.BytesIO(body)
        return super().stream
